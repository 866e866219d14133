package zcnet

import (
	"io"
	"net"
	"os"
	"syscall"
)

// splice hands the rest of the stream to a writer with move, a splice(2) from the socket
// (io.Copy's, through the standard library): the third receive backend, which takes
// the socket over. The stream must hold no byte, so that the socket's next byte is the
// stream's; it is ended when move ends without an error.
func (f *filler) splice(move func() (int64, error), plainLowat func()) (int64, error) {
	f.handOver()
	plainLowat() // no mark left by a Next
	n, err := move()
	f.st.spliced.Add(uint64(n))
	if err == nil {
		f.s.setEOF()
	}
	return n, err
}

// handOver readies the socket for a splice to the end of the stream: no mapped page and
// no ring stay, as on the copy path.
func (f *filler) handOver() {
	f.release()
	if err := f.s.dropEmptyRing(); err != nil {
		f.disable("munmap: " + err.Error())
	}
}

// WriteTo's own splice loop. The standard library's (net.TCPConn.ReadFrom,
// os.File.ReadFrom) waits for every segment train, and nothing can bound a raised
// SO_RCVLOWAT inside it; this loop splices the socket into a pipe through fills (the
// pipe receiver), which batch their waits like any other (see batcher), then splices
// the pipe into the writer.

// splicePipeSize is the pipe the loop asks for (F_SETPIPE_SZ; the default pipe-max-size):
// what one fill moves and one batched wait waits for.
const splicePipeSize = 1 << 20

// pipeReceiver is the receive backend of the splice loop: splice(2) from the socket into
// the pipe whose write end is the fill's choice.pipe - 1, up to choice.copy bytes.
type pipeReceiver struct{}

func (pipeReceiver) try(f *filler, fd int) bool {
	n, err := ignoringEINTR(func() (int, error) { return f.sys.splice(fd, f.ch.pipe-1, f.ch.copy) })
	if n <= 0 || err != nil {
		return f.settle(n, err)
	}
	f.st.spliced.Add(uint64(n))
	f.received(n, false)
	return true
}

// spliceDst is a writer the loop splices into: its RawConn, and how its write errors are
// shaped, as the standard library's own splice into it shapes them.
type spliceDst struct {
	rc  syscall.RawConn
	err func(error) error
}

// spliceTo returns w as a spliceDst when the loop can splice into it: a file not opened
// for appending (splice refuses those), a TCP or Unix socket, or a Conn's socket.
func spliceTo(w io.Writer) (spliceDst, bool) {
	var sc syscall.Conn
	var wrap func(error) error
	switch d := w.(type) {
	case *os.File:
		if appending(d) {
			return spliceDst{}, false
		}
		sc, wrap = d, func(err error) error { return &os.PathError{Op: "write", Path: d.Name(), Err: err} }
	case *net.TCPConn:
		sc, wrap = d, readFromErr(d)
	case *net.UnixConn:
		sc, wrap = d, readFromErr(d)
	case *Conn:
		if d.tc == nil {
			return spliceDst{}, false
		}
		sc, wrap = d.tc, readFromErr(d.tc)
	default:
		return spliceDst{}, false
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return spliceDst{}, false
	}
	return spliceDst{rc, wrap}, true
}

// readFromErr shapes a write error of a socket as its ReadFrom does.
func readFromErr(c net.Conn) func(error) error {
	return func(err error) error {
		return &net.OpError{Op: "readfrom", Net: c.LocalAddr().Network(), Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
	}
}

// spliceLoop moves the rest of the stream to dst through a pipe of its own, reporting
// false when it cannot make one (the caller then splices as the standard library does).
// The stream must hold no byte; it is ended when the loop ends without an error.
func (c *Conn) spliceLoop(dst spliceDst) (int64, bool, error) {
	r, w, size, err := newPipe(splicePipeSize)
	if err != nil {
		return 0, false, nil
	}
	defer closePipe(r, w)
	c.f.handOver()
	var total int64
	for {
		res := c.f.fill(choice{pipe: w + 1, copy: size, lowat: 1, lowatMax: size}, nil)
		if res.n > 0 {
			n, err := c.f.drainPipe(r, dst.rc, res.n)
			total += n
			if err != nil {
				return total, true, dst.err(err)
			}
		}
		if res.err == io.EOF {
			return total, true, nil
		}
		if res.err != nil {
			return total, true, c.opErr("read", res.err)
		}
	}
}

// drainPipe splices n bytes from the pipe's read end r into dst, waiting for dst to be
// writable as its RawConn does.
func (f *filler) drainPipe(r int, dst syscall.RawConn, n int) (int64, error) {
	var moved int64
	var serr error
	err := dst.Write(func(fd uintptr) bool {
		for n > 0 {
			m, err := f.sys.splice(r, int(fd), n)
			switch {
			case isEINTR(err):
				continue
			case isEAGAIN(err):
				return false
			case err != nil:
				serr = os.NewSyscallError("splice", err)
				return true
			case m == 0:
				serr = io.ErrShortWrite
				return true
			}
			n -= m
			moved += int64(m)
		}
		return true
	})
	if err == nil {
		err = serr
	}
	return moved, err
}
