package zcnet

import (
	"errors"
	"io"
	"net"
	"os"
)

// copyReceiver is the receive backend that copies with read(2): straight into the
// fill's dst, or into the stream's buffer.
type copyReceiver struct{}

// try reads what the fill wants.
func (copyReceiver) try(f *filler, fd int) bool {
	if f.dst != nil {
		return f.read(fd, f.dst, true, f.cause)
	}
	return f.read(fd, f.s.copySpace(f.ch.copy), false, f.cause)
}

// read reads into p with read(2) (the fill's dst when inDst, else space of the stream's buffer) and
// records what came: it returns false to wait (EAGAIN), or true with bytes received,
// the end of the stream or an error recorded.
func (f *filler) read(fd int, p []byte, inDst bool, cause copyCause) bool {
	n, err := ignoringEINTR(func() (int, error) { return f.sys.read(fd, p) })
	f.st.recvCalls.Add(1)
	if n <= 0 || err != nil {
		return f.settle(n, err)
	}
	f.copiedIn(n, inDst, cause)
	f.received(n, false)
	return true
}

// copiedIn records n bytes received by copying, handing them to the stream unless they
// went into the fill's dst.
func (f *filler) copiedIn(n int, inDst bool, cause copyCause) {
	if !inDst {
		f.s.addCopied(n)
	}
	f.st.copied.Add(uint64(n))
	f.st.copyCause[cause].Add(uint64(n))
	f.st.copyFills.Add(1)
}

// peek is a one-byte MSG_PEEK recv(2): 1 when bytes are queued, 0 at the end.
func (f *filler) peek(fd int) (int, error) {
	n, err := ignoringEINTR(func() (int, error) { return f.sys.peek(fd) })
	f.st.recvCalls.Add(1)
	return n, err
}

// fillConn is fill through the TCPConn, which waits and reads as net.TCPConn.Read does:
// where there are no raw socket reads, and for a plain fill (see filler.plain). It
// copies whatever ch asked, and tells the batcher what came, so that a conn whose
// messages grow into a stream leaves the plain path.
func (f *filler) fillConn(ch choice, dst []byte) fillResult {
	p := dst
	if p == nil {
		p = f.s.copySpace(max(ch.copy, 1))
	}
	n, err := f.conn.Read(p)
	if n > 0 || !errors.Is(err, net.ErrClosed) && !errors.Is(err, os.ErrDeadlineExceeded) {
		f.st.recvCalls.Add(1) // (Close and the deadline end a wait, not a read)
	}
	f.ch, f.res = ch, fillResult{fellBack: ch.mapping}
	if n > 0 {
		f.copiedIn(n, dst != nil, f.copyCause())
		err = nil
	}
	res := f.res
	f.res = fillResult{}
	// Its wait, if any, was the TCPConn's: a fill that took all it asked says the
	// stream streams, as one that waited does.
	f.batch.filled(min(ch.lowatMax, len(p)), n, false, true)
	f.s.dropEmptyBuf()
	if err == io.EOF {
		f.s.setEOF()
	}
	res.n, res.err = n, err
	return res
}
