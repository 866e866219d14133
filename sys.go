package zcnet

import "unsafe"

// zerocopyReceive is struct tcp_zerocopy_receive from <linux/tcp.h> as of Linux 5.11 and
// later (64 bytes). Older kernels accept it and read only the prefix they know.
// golang.org/x/sys/unix has the option constant but not the struct.
type zerocopyReceive struct {
	Address        uint64 // in: start of the range in the socket's VMA to map into
	Length         uint32 // in: bytes of range; out: bytes mapped (whole pages)
	RecvSkipHint   uint32 // out: bytes to read with recv(2) before the next mappable byte
	Inq            uint32 // out: bytes still queued after this call
	Err            int32  // out: pending socket error (e.g. ECONNRESET), cleared by the call
	CopybufAddress uint64 // in: buffer the kernel may copy an unaligned tail into
	CopybufLen     int32  // in: its size; out: bytes copied into it
	Flags          uint32 // in: TCP_RECEIVE_ZEROCOPY_FLAG_*
	MsgControl     uint64
	MsgControllen  uint64
	MsgFlags       uint32
	Reserved       uint32
}

// Compile-time check of the ABI size.
var _ [64 - unsafe.Sizeof(zerocopyReceive{})]struct{}
var _ [unsafe.Sizeof(zerocopyReceive{}) - 64]struct{}

// sysCalls is the syscall layer: one thin function per kernel operation the ring and the
// copy path need, with no policy. None of them retries on EINTR: the fill does, for all, with ignoringEINTR. Every Conn holds the sysCalls it was created with, which
// is the seam fault-injection and the fuzzer's fake kernel use.
type sysCalls struct {
	// reserve creates a PROT_READ, MAP_SHARED mapping of length bytes on the socket fd
	// (mmap(2) on a TCP socket only reserves address space).
	reserve func(fd int, length uintptr) (unsafe.Pointer, error)
	// unmap unmaps [addr, addr+length): used both to trim a reservation and to release it.
	unmap func(addr unsafe.Pointer, length uintptr) error
	// dontneed drops the pages mapped in [addr, addr+length) (madvise MADV_DONTNEED).
	dontneed func(addr unsafe.Pointer, length uintptr) error
	// zerocopy is getsockopt(fd, IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE, zc).
	zerocopy func(fd int, zc *zerocopyReceive) error
	// read is read(2) on the non-blocking socket; io.EOF is not produced here (n == 0, nil).
	read func(fd int, p []byte) (int, error)
	// peek is recv(2) of one byte with MSG_PEEK: 1 when bytes are queued (none is
	// consumed), 0 at the end of the stream, or the error recv would return. It may be
	// nil; the read path then reads instead.
	peek func(fd int) (int, error)
	// mapAnon replaces [addr, addr+length) with an empty private anonymous PROT_READ
	// mapping (mmap MAP_FIXED): reads there see zeros instead of faulting.
	mapAnon func(addr unsafe.Pointer, length uintptr) error
	// setRcvlowat is setsockopt(fd, SOL_SOCKET, SO_RCVLOWAT, n).
	setRcvlowat func(fd int, n int) error
	// splice is splice(2) of up to n bytes from in to out, SPLICE_F_MOVE and
	// SPLICE_F_NONBLOCK (EAGAIN: nothing to move now). It may be nil: WriteTo then leaves
	// splicing to the standard library.
	splice func(in, out, n int) (int, error)
	// inq is ioctl(fd, SIOCINQ): the bytes queued. It may be nil.
	inq func(fd int) (int, error)
	// rcvBuf is getsockopt(fd, SOL_SOCKET, SO_RCVBUF). It may be nil; the conn then
	// never batches its wake-ups.
	rcvBuf func(fd int) (int, error)
	// rcvMSS is TCP_INFO's tcpi_rcv_mss: the size of the segments the peer sends. It
	// may be nil; copied bytes are then not told apart by segment size.
	rcvMSS func(fd int) (int, error)
}
