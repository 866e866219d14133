package zcnet

// splice hands the rest of the stream to a writer with move, a splice(2) from the socket
// (io.Copy's, through the standard library): the third receive backend, which takes
// the socket over. The stream must hold no byte, so that the socket's next byte is the
// stream's; it is ended when move ends without an error.
func (f *filler) splice(move func() (int64, error), plainLowat func()) (int64, error) {
	// The socket is the splice's from here: no mark left by a Next, no mapped page,
	// and no ring, as on the copy path.
	f.release()
	if err := f.s.dropEmptyRing(); err != nil {
		f.disable("munmap: " + err.Error())
	}
	plainLowat()
	n, err := move()
	f.st.spliced.Add(uint64(n))
	if err == nil {
		f.s.setEOF()
	}
	return n, err
}
