package zcnet

import (
	"errors"
	"fmt"
	"math"
	"time"
)

// Mode selects how a Conn receives.
type Mode int

const (
	// ModeAuto (the zero value) copies as net.TCPConn does and now and then probes the
	// mapping path on this stream, priced in CPU time: it maps only where mapping came
	// out clearly cheaper (twice in a row), and probes ever more rarely where it does
	// not. Calls under 64 KiB, and calls on a conn whose reads receive less than 32 KiB
	// on average (small messages, whatever the buffer), always copy and read no clock.
	ModeAuto Mode = iota
	// ModeZeroCopy maps whole pages whenever the kernel can, copying only what it cannot.
	// A stream that maps nothing for several fills in a row (a sender's compound or
	// page-cache pages, segments that do not carry whole pages, small messages) is
	// received with recv(2) for a stretch of the stream, after which one fill tries
	// mapping again: the stretch doubles from 1 MiB up to 64 MiB while the tries map
	// nothing, and a try that maps ends it (Stats.MapBackoffs). WriteTo does not
	// splice in this mode, so that mapping can resume.
	ModeZeroCopy
	// ModeCopy never maps: the conn behaves as a net.TCPConn with a pooled read buffer.
	ModeCopy
)

// String returns "auto", "zerocopy" or "copy".
func (m Mode) String() string {
	switch m {
	case ModeAuto:
		return "auto"
	case ModeZeroCopy:
		return "zerocopy"
	case ModeCopy:
		return "copy"
	}
	return fmt.Sprintf("Mode(%d)", int(m))
}

// DefaultRingSize is the address space reserved per conn when Options.RingSize is 0.
const DefaultRingSize = 8 << 20

// MaxRingSize is the largest Options.RingSize accepted.
const MaxRingSize = 1 << 30

// Options configure how conns receive. The zero value is ready to use.
type Options struct {
	// Mode selects mapping, copying or measured choice (the default).
	Mode Mode
	// RingSize is the address space, in bytes, reserved per conn for mapped pages, rounded
	// up to a multiple of the page size; 0 means DefaultRingSize. It bounds the largest
	// Next and the mapped pages a conn holds: consumed pages stay mapped until the ring
	// has been used up, then are released in one call (a larger ring, fewer TLB
	// shootdowns; a smaller one, fewer pinned pages). Only address space is reserved, at
	// the first read that maps, and given back after a long wait.
	RingSize int
	// PageAlignedMSS makes a listener advertise a maximum segment size of one page of
	// payload (TCP_MAXSEG = page size + 12 bytes of timestamp option), so that each
	// segment a peer sends fills exactly one page: the payload the kernel can map. It
	// assumes TCP timestamps (on by default in Linux); without them segments carry 12
	// bytes more than a page and none can be mapped. A Dialer sets it on its socket before
	// connecting, so that its SYN advertises it and the server's segments fill pages: a
	// download maps as an upload to a listener does. It is ignored by NewConn and
	// NewListener (the socket exists already), and where the fast path does not exist
	// (non-Linux).
	PageAlignedMSS bool
	// CopyViews makes Next and WriteTo hand out copies instead of mapped memory, as a
	// debugging aid: writing into a mapped view is a fatal fault of the process, and
	// keeping one past its validity reads bytes of later messages, zeros, or memory
	// mapped there later (see Conn.Next). With CopyViews, such
	// code reads or writes a pooled buffer instead, and a race detector or a test can
	// find it. It costs a copy of every byte.
	CopyViews bool
	// UserTimeout, when positive, sets TCP_USER_TIMEOUT on every conn a Listener accepts
	// and a Dialer makes (rounded up to a whole millisecond): how long sent data may stay
	// unacknowledged before the kernel drops the connection. Code that sets it only on a
	// concrete *net.TCPConn (gRPC's keepalive does) skips a *Conn; set it here instead. Zero
	// leaves the kernel default; negative values and values above MaxUserTimeout are
	// errors. It is ignored by NewConn (which does not touch the socket) and outside Linux.
	UserTimeout time.Duration
}

// MaxUserTimeout is the largest Options.UserTimeout accepted (the kernel takes
// milliseconds as a C int).
const MaxUserTimeout = math.MaxInt32 * time.Millisecond

// Errors for bad arguments.
var (
	// ErrNegativeCount is returned by Next for a negative count.
	ErrNegativeCount = errors.New("zcnet: negative count")
	// ErrTooLarge is returned by Next for a count above the conn's ring size.
	ErrTooLarge = errors.New("zcnet: count exceeds RingSize")
)

// validate checks opts and returns the ring size to use.
func (o *Options) validate() (int, error) {
	switch o.Mode {
	case ModeAuto, ModeZeroCopy, ModeCopy:
	default:
		return 0, fmt.Errorf("zcnet: invalid Mode %d", int(o.Mode))
	}
	size := o.RingSize
	switch {
	case size < 0:
		return 0, fmt.Errorf("zcnet: negative RingSize %d", size)
	case size > MaxRingSize:
		return 0, fmt.Errorf("zcnet: RingSize %d above the maximum %d", size, MaxRingSize)
	case size == 0:
		size = DefaultRingSize
	}
	size = pages(size)
	switch {
	case o.UserTimeout < 0:
		return 0, fmt.Errorf("zcnet: negative UserTimeout %v", o.UserTimeout)
	case o.UserTimeout > MaxUserTimeout:
		return 0, fmt.Errorf("zcnet: UserTimeout %v above the maximum %v", o.UserTimeout, MaxUserTimeout)
	}
	return size, nil
}
