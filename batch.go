package zcnet

import (
	"runtime"
	"sync/atomic"
	"time"
)

// Batched wake-ups. A reader that waits for data is woken by the kernel as soon as one
// segment train is queued: a bulk stream read into a large buffer costs a wake-up (and
// the scheduler's work around it) every few tens of KiB. SO_RCVLOWAT makes the kernel
// wake the reader only once that many bytes are queued (or at the stream's end, an error,
// memory pressure), so that one wake-up fills the buffer. Its catch is a peer that sends
// less and waits: the reader would wait forever. So a batched wait is bounded: a timer
// lowers SO_RCVLOWAT to 1 when no wake-up came in time, and lowering it wakes the reader
// at once (tcp_set_rcvlowat calls tcp_data_ready) with what is queued.
//
// A fill batches only when all of these hold:
//   - the call can take at least batchMin bytes at once (a Read's buffer, WriteTo's fill);
//   - the stream streams: the conn's last fill that waited took all it asked (or, when
//     batched, all its mark), or took copyBufSize bytes or more and the kernel reported
//     bytes still queued after them (a mapping call's inq, or SIOCINQ); or a fill found at least
//     batchMin bytes queued without waiting. A fill that waited and got less than it asked
//     otherwise (a bounded wait the timer ended, a request and its response) stops
//     batching until then;
//   - at least batchMin bytes arrive within batchCap: the bound is the time the mark's
//     bytes take at the stream's measured arrival rate (bytes over the time a fill waited
//     for them), times batchMargin, plus batchSlack, and the mark is lowered until the
//     bound fits under batchCap. A stream too slow for that (one of many concurrent
//     streams sharing the host, a slow peer) never batches, and neither asks the kernel
//     what is queued nor reads SO_RCVBUF: the poller already wakes its reader with more
//     than one train queued;
//   - the bound has not ended a batched wait lately. A wait the bound ends costs its
//     reader the bound, and more: Go's poller sleeps at least 1 ms for a timer under a
//     millisecond when the process is otherwise idle, so such a wait lasts about 1.1 ms.
//     A stream that sends in bursts (a large request, then a pause for the answer) ends
//     a wait that way at the tail of many bursts. So each wait the bound ends holds
//     batching off for the next holdFirst waits that would batch, four times as many
//     after each further one, up to holdMax, and each batched wait that the kernel ends
//     with its mark's bytes shortens the next hold by one: a stream that keeps batching
//     loses nothing, a bursty one soon pays for the bound once in holdMax such waits.
//
// The mark is at most a quarter of SO_RCVBUF (read now and then and cached): above
// tcp_space_from_win(mark) > sk_rcvbuf, tcp_set_rcvlowat grows sk_rcvbuf and sets the
// window clamp to the mark, which would cap the advertised window for the rest of the
// conn's life. A quarter keeps it under that for any skb len/truesize ratio down to 1/4.
//
// One time.Timer per conn (AfterFunc, re-armed) and no goroutine; the timer's function
// reaches the socket through syscall.RawConn.Control, which holds a reference to the
// descriptor, so that it never touches a closed or reused one, and a generation in its
// state makes a stale firing (a timer stopped too late) do nothing.
const (
	batchMin    = 128 << 10             // calls that take less never batch
	batchCap    = time.Millisecond      // the longest bound of a batched wait
	batchMargin = 2                     // the bound over the mark's expected arrival time
	batchSlack  = 50 * time.Microsecond // added to the bound: the wake-up's own latency
	rcvbufEvery = 256                   // batched waits between two reads of SO_RCVBUF
	holdFirst   = 16                    // waits held off batching after a bound ended a wait
	holdMax     = 1024                  // the longest such hold, in waits
)

// batchTimer is the part of *time.Timer the batcher uses.
type batchTimer interface {
	Reset(d time.Duration) bool
	Stop() bool
}

// The phases of a batcher's timer, in the low bits of its state; the rest counts arms.
const (
	batchIdle   = iota // no bounded wait under way
	batchArmed         // a reader waits under a raised mark, the timer runs
	batchFiring        // the timer lowers the mark
	batchFired         // the timer lowered the mark to 1
	batchPhases
)

// batcher holds one conn's batching: whether its stream streams, its arrival rate, and
// the timer that bounds a batched wait. It is owned by the reader (under the read lock),
// except state and due, which the timer's function reads and moves on.
type batcher struct {
	ctl    func(func(fd uintptr)) error // the socket's RawConn.Control; nil: never batch
	lowat  func(fd, n int) error        // setsockopt SO_RCVLOWAT
	rcvbuf func(fd int) (int, error)    // getsockopt SO_RCVBUF; nil: never batch
	after  func(time.Duration, func()) batchTimer
	now    func() time.Duration // a monotonic clock
	st     *counters

	t       batchTimer
	state   atomic.Uint64 // arms<<2 | phase
	due     atomic.Int64  // when the armed bound ends, on now's clock
	lowered bool          // the last firing set the mark to 1 (written by fire before batchFired)

	streams bool
	// small: the last fill got under copyBufSize and the stream does not stream (small
	// requests and responses): waits read no clock until a bulk fill comes.
	small    bool
	hold     int           // waits that would batch left to hold off (see holdFirst)
	holdLen  int           // the hold the last bounded wait set, less one per full batched wait
	ns       float64       // arrival rate, ns per byte (0: not measured yet)
	slow     bool          // at that rate batchMin bytes take longer than the bound's cap
	parkedAt time.Duration // when the current fill first waited (0: it has not)
	bound    time.Duration // the bound of the wait the current try parks in (0: none)
	mark     int           // the mark the current fill's batched wait asked for
	buf      int           // SO_RCVBUF when last read
	bufAge   int           // batched waits since
}

// batchEpoch is the origin of batchClock.
var batchEpoch = time.Now()

// batchClock is the monotonic clock of the batchers (vDSO, no system call), never 0.
func batchClock() time.Duration { return time.Since(batchEpoch) + 1 }

// afterFunc is time.AfterFunc as a batchTimer.
func afterFunc(d time.Duration, f func()) batchTimer { return time.AfterFunc(d, f) }

// init makes b batch over ctl (nil: never) with the syscall layer s.
func (b *batcher) init(ctl func(func(fd uintptr)) error, s *sysCalls, st *counters) {
	b.ctl, b.lowat, b.rcvbuf, b.st = ctl, s.setRcvlowat, s.rcvBuf, st
	b.after, b.now = afterFunc, batchClock
}

// park runs as a try is about to wait: want is what the call can take now (under
// batchMin it does not batch; under copyBufSize it is not even measured), plain the mark
// it waits under otherwise. It returns
// the mark to wait under (see arm). A fill batches at most once.
func (b *batcher) park(fd, want, plain int) int {
	if want < copyBufSize || b.ctl == nil || b.rcvbuf == nil || b.small {
		return plain
	}
	now := b.now()
	if b.parkedAt == 0 {
		b.parkedAt = now
	} else if b.mark > 0 {
		return plain // the fill batched once already: the bound is spent
	}
	if !b.streams || b.ns == 0 || want < batchMin || b.slow {
		return plain
	}
	// The mark: what the call can take, what cannot clamp the window, and what arrives
	// within the cap at the stream's rate.
	mark := min(want, b.capMark(fd, want), int(float64(batchCap-batchSlack)/(b.ns*batchMargin)))
	if mark < batchMin || mark <= plain {
		return plain
	}
	if b.hold > 0 {
		b.hold-- // a wait that would batch, held off
		return plain
	}
	bound := time.Duration(float64(mark)*b.ns*batchMargin) + batchSlack
	b.mark, b.bound = mark, bound
	b.due.Store(int64(now + bound))
	return mark
}

// capMark returns the highest mark that cannot clamp the window: a quarter of SO_RCVBUF,
// which is read again every rcvbufEvery batched waits, or every 16 while it holds the
// mark under want (autotuning grows it as the stream speeds up).
func (b *batcher) capMark(fd, want int) int {
	if b.buf == 0 || b.bufAge >= rcvbufEvery || (b.buf/4 < want && b.bufAge >= 16) {
		if n, err := b.rcvbuf(fd); err == nil {
			b.buf = n
		}
		b.bufAge = 0
	}
	b.bufAge++
	return b.buf / 4
}

// arm starts the bound of the wait park raised the mark for, once the mark is set.
func (b *batcher) arm() {
	if b.bound == 0 {
		return
	}
	s := b.state.Load()
	b.state.Store((s>>2+1)<<2 | batchArmed)
	if b.t == nil {
		b.t = b.after(b.bound, b.fire)
	} else {
		b.t.Reset(b.bound)
	}
	b.bound = 0
	b.st.batched.Add(1)
}

// fire is the timer's function: it lowers the mark of the wait it was armed for to 1,
// which wakes the reader with what is queued. A firing for an earlier arm does nothing.
func (b *batcher) fire() {
	s := b.state.Load()
	if s%batchPhases != batchArmed || b.now() < time.Duration(b.due.Load()) {
		return
	}
	if !b.state.CompareAndSwap(s, s-batchArmed+batchFiring) {
		return
	}
	var err error
	if cerr := b.ctl(func(fd uintptr) { err = b.lowat(int(fd), 1) }); cerr != nil {
		err = cerr
	}
	b.lowered = err == nil // (published to the reader by the store below)
	b.state.Store(s - batchArmed + batchFired)
}

// wake runs when the reader runs again after a wait: it stops the bound, and reports
// whether the timer fired meanwhile, and if so whether it lowered the mark to 1 (else
// the mark in force is unknown).
func (b *batcher) wake() (fired, lowered bool) {
	s := b.state.Load()
	switch s % batchPhases {
	case batchIdle:
		return false, false
	case batchArmed:
		if b.state.CompareAndSwap(s, s-batchArmed) {
			b.t.Stop()
			return false, false
		}
	}
	for b.state.Load()%batchPhases != batchFired {
		runtime.Gosched()
	}
	b.state.Store(s - s%batchPhases)
	b.st.bounded.Add(1)
	b.holdLen = min(max(4*b.holdLen, holdFirst), holdMax)
	b.hold = b.holdLen
	return true, b.lowered
}

// asks reports whether the kernel should be asked how much is still queued after a fill
// that could take want bytes received n: it waited and got copyBufSize or more, but less
// than it asked, while the stream is not taken to stream. (A mapping call reports it anyway;
// for a copy it is one ioctl, only on such fills.)
func (b *batcher) asks(n, want int, waited bool) bool {
	return waited && !b.streams && !b.slow && n >= copyBufSize && n < want && b.ctl != nil
}

// filled runs after a fill of a call that could take want bytes received n (more: the
// kernel reported bytes still queued after them; waited: the fill waited). It measures
// the arrival rate over the fill's wait and decides whether the stream streams. Fills
// under copyBufSize are left out: small calls neither batch nor say how a stream flows.
func (b *batcher) filled(want, n int, more, waited bool) {
	if want < copyBufSize || b.ctl == nil {
		return
	}
	if b.parkedAt != 0 && n > 0 {
		ns := float64(b.now()-b.parkedAt) / float64(n)
		if b.ns == 0 {
			b.ns = ns
		} else {
			b.ns += (ns - b.ns) / 4
		}
		b.slow = float64(batchCap-batchSlack)/(b.ns*batchMargin) < batchMin
	}
	switch {
	case b.mark > 0:
		b.streams = n >= b.mark
		if b.streams && b.holdLen > 0 {
			b.holdLen--
		}
	case waited:
		b.streams = n >= want || more
	default:
		// Bytes were queued when the call came: the stream flows, but only a bulk
		// amount says it streams.
		b.streams = b.streams || n >= batchMin || more
	}
	b.small = !b.streams && n < copyBufSize
	b.parkedAt, b.mark, b.bound = 0, 0, 0
}

// streamCopy is what a fill into the stream's pooled buffer takes while the stream
// streams (WriteTo's, and small Reads' read-ahead): the batched wait's mark, then one
// hand-over to the writer, or several Reads served from memory.
const streamCopy = 512 << 10

// copySize is the pooled buffer a fill on the copy path receives into: streamCopy while
// the stream streams (so that it can batch), else copyBufSize.
func (b *batcher) copySize() int {
	if b.streams && b.ctl != nil {
		return streamCopy
	}
	return copyBufSize
}
