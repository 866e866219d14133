//go:build linux

package zcnet

import (
	"fmt"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// This file is a deterministic fake of the kernel side of a TCP receive: a sysCalls and a
// rawConn that answer like net/ipv4/tcp.c (tcp_zerocopy_receive, tcp_recvmsg) and the Go
// netpoller, with every choice (what arrives when, which stretches are mappable, faults,
// deadlines) taken from a byte string, so that a fuzzer can explore them.
//
// The memory is real: reserve returns an anonymous PROT_READ mapping, "mapping" a page
// writes its stream bytes there, and every page the real kernel would drop (zapped before
// a mapping, MADV_DONTNEED) is scribbled over, so a reader that uses a page it released,
// or a view that was recycled, sees corrupted bytes instead of a silent pass.

// fakeFD is the descriptor the fake rawConn hands to the read path.
const fakeFD = 1000

// fakeSrc hands out the fuzz input byte by byte; once exhausted it returns zeros, which
// every decision maps to the benign choice (data arrives, no fault).
type fakeSrc struct {
	b []byte
	i int
}

func (s *fakeSrc) byte() byte {
	if s.i >= len(s.b) {
		return 0
	}
	v := s.b[s.i]
	s.i++
	return v
}

func (s *fakeSrc) exhausted() bool { return s.i >= len(s.b) }

// intn returns a number in [0, n) from two input bytes.
func (s *fakeSrc) intn(n int) int {
	v := int(s.byte()) | int(s.byte())<<8
	if n <= 1 {
		return 0
	}
	return v % n
}

// rare is true with probability k/256 (never once the input is exhausted).
func (s *fakeSrc) rare(k int) bool { return int(s.byte()) > 255-k }

// fakePat is the fake stream: byte o of the stream. It does not repeat within any
// stream length the tests use, so a page delivered at the wrong offset is caught.
func fakePat(o int64) byte { return byte((uint64(o)*0x9E3779B97F4A7C15 + uint64(o)>>12) >> 56) }

// scribble is what a dropped page reads as in the fake.
func scribble(b []byte) {
	for i := range b {
		b[i] = byte(i*7 + 0x5b)
	}
}

// fakeFrag is one page fragment of an skb.
type fakeFrag struct {
	size     int
	mappable bool // a whole order-0 page at offset 0 (can_map_frag)
}

// fakeSkb is one received buffer: head bytes of linear data, then fragments.
type fakeSkb struct {
	start int // stream offset of its first byte
	head  int
	frags []fakeFrag
}

func (b *fakeSkb) len() int {
	n := b.head
	for _, f := range b.frags {
		n += f.size
	}
	return n
}

// Page states of a fake reservation.
const (
	pgUnmapped = iota // munmapped
	pgEmpty           // socket VMA, no page mapped (the real one would SIGBUS on read)
	pgMapped          // socket VMA, a stream page mapped
	pgAnon            // replaced by mapAnon: reads zeros
)

// fakeRes is one reservation made by reserve.
type fakeRes struct {
	base  unsafe.Pointer
	pages []int // state per page
}

func (r *fakeRes) addr() uintptr { return uintptr(r.base) }
func (r *fakeRes) size() int     { return len(r.pages) * pageSize }

// Faults the fake can inject (fakeFaults.kind bits).
const (
	faultReserve  = 1 << iota // reserve fails with ENOMEM
	faultZerocopy             // the zcAt-th TCP_ZEROCOPY_RECEIVE fails with zcErr
	faultDontneed             // the dnAt-th MADV_DONTNEED fails with EINVAL
)

type fakeFaults struct {
	kind  int
	zcAt  int
	zcErr unix.Errno
	dnAt  int
}

// fakeKernel is the fake socket, its peer, and the process memory it maps into.
type fakeKernel struct {
	tb  testing.TB
	src *fakeSrc

	// The peer.
	total int  // stream bytes the peer sends before its end
	reset bool // the peer ends with a reset instead of a FIN
	ended bool // the end was delivered

	// The socket.
	queue   []fakeSkb
	sent    int // bytes received into the queue (rcv_nxt)
	read    int // bytes taken out of it (copied_seq)
	fin     bool
	shut    bool       // RCV_SHUTDOWN
	sockErr unix.Errno // pending sk_err
	lowat   int
	rcvbuf  int  // SO_RCVBUF (0: not chosen yet)
	gone    bool // the conn was closed: Control fails

	// The clock and the batching timer (one per conn, as the batcher makes).
	clock  time.Duration
	timer  *fakeTimer
	lowats int // setsockopt SO_RCVLOWAT calls
	fires  int // bounds that ended a batched wait

	// The poller.
	pending   bool   // an event arrived since the reader last checked
	inCall    string // the API call being driven: "Read", "Next" or "WriteTo"
	deadlines int    // deadline errors handed out
	spin      int    // syscalls since the last progress

	faults   fakeFaults
	injected []string // faults that fired
	// shape, when set, makes each skb instead of the input: 16 whole pages from stream
	// offset start, which the kernel maps when shape(start) says so (else compound pages).
	shape func(start int) bool

	mu     sync.Mutex // guards res and closed: a GC cleanup may unmap after the test
	res    []*fakeRes
	closed bool

	// Counters.
	zcCalls, recvCalls, peeks, dnCalls, reserves int
	mappedBytes, recvBytes                       int
	hintConflicts                                int
}

func newFakeKernel(tb testing.TB, src *fakeSrc, total int, reset bool, f fakeFaults) *fakeKernel {
	return &fakeKernel{tb: tb, src: src, total: total, reset: reset, faults: f, lowat: 1}
}

// sys returns the syscall layer backed by the fake.
func (k *fakeKernel) sys() *sysCalls {
	return &sysCalls{
		reserve:     k.reserveFn,
		unmap:       k.unmapFn,
		dontneed:    k.dontneedFn,
		zerocopy:    k.zerocopyFn,
		read:        k.recvFn,
		peek:        k.peekFn,
		mapAnon:     k.mapAnonFn,
		setRcvlowat: k.setRcvlowatFn,
		rcvBuf:      k.rcvBufFn,
	}
}

// batchOn makes c batch its wake-ups over the fake: Control, the timer and the clock are
// the fake's.
func (k *fakeKernel) batchOn(c *Conn) {
	b := &c.f.batch
	b.ctl = k.Control
	b.now = func() time.Duration { return k.clock + 1 }
	b.after = func(d time.Duration, f func()) batchTimer {
		if k.timer != nil {
			k.fatalf("a second batching timer for one conn")
		}
		k.timer = &fakeTimer{k: k, f: f}
		k.timer.Reset(d)
		return k.timer
	}
}

// fakeTimer is the batching timer on the fake's clock: the fake's poller fires it.
type fakeTimer struct {
	k     *fakeKernel
	f     func()
	at    time.Duration
	armed bool
}

func (t *fakeTimer) Reset(d time.Duration) bool {
	if d <= 0 || d > batchCap {
		t.k.fatalf("batched wait bounded by %v, want (0, %v]", d, batchCap)
	}
	was := t.armed
	t.armed, t.at = true, t.k.clock+d
	return was
}

func (t *fakeTimer) Stop() bool {
	was := t.armed
	t.armed = false
	return was
}

// fire runs the timer's function as its time comes.
func (t *fakeTimer) fire() {
	t.armed = false
	t.k.clock = max(t.k.clock, t.at)
	t.f()
}

// Control is the fake RawConn's Control: it fails once the conn is closed, as the real
// one does, so that a late timer touches no descriptor.
func (k *fakeKernel) Control(f func(fd uintptr)) error {
	if k.gone {
		return net.ErrClosed
	}
	f(fakeFD)
	return nil
}

// batchedWait reports whether the reader waits under a raised mark that its bound will
// lower.
func (k *fakeKernel) batchedWait() bool { return k.timer != nil && k.timer.armed }

func (k *fakeKernel) fatalf(format string, args ...any) {
	k.tb.Helper()
	k.tb.Fatalf("fake kernel: "+format, args...)
}

func (k *fakeKernel) checkFD(fd int) {
	if fd != fakeFD {
		k.fatalf("syscall on fd %d, want %d", fd, fakeFD)
	}
	k.spin++
	if k.spin > 100000 {
		k.fatalf("no progress after %d syscalls", k.spin)
	}
}

// inq is the number of queued bytes.
func (k *fakeKernel) inq() int { return k.sent - k.read }

// readable reports whether the poller would report the socket readable.
func (k *fakeKernel) readable() bool {
	return k.inq() >= max(k.lowat, 1) || k.shut || k.sockErr != 0
}

// nextSkb makes the peer's next skb (at most rest bytes).
func (k *fakeKernel) nextSkb(rest int) fakeSkb {
	b := fakeSkb{start: k.sent}
	if k.shape != nil {
		mappable := k.shape(b.start)
		for range 16 {
			b.frags = append(b.frags, fakeFrag{pageSize, mappable})
		}
		if b.len() > rest {
			b.frags = []fakeFrag{{rest, false}}
		}
		return b
	}
	kind := k.src.byte() % 5
	pages := 1 + int(k.src.byte()%16)
	switch kind {
	case 0, 1: // whole pages, all mappable (a page-sized MSS with order-0 pages)
		for range pages {
			b.frags = append(b.frags, fakeFrag{pageSize, true})
		}
	case 2: // linear data only
		b.head = 1 + k.src.intn(3*pageSize)
	case 3: // a linear head, then mappable pages (the hint covers them all)
		b.head = 1 + k.src.intn(pageSize)
		for range pages {
			b.frags = append(b.frags, fakeFrag{pageSize, true})
		}
	case 4: // fragments, some unmappable (compound pages, partial pages)
		for range pages {
			if k.src.byte()%2 == 0 {
				b.frags = append(b.frags, fakeFrag{pageSize, true})
			} else {
				b.frags = append(b.frags, fakeFrag{1 + k.src.intn(2*pageSize), false})
			}
		}
	}
	if b.len() > rest {
		// The last bytes of the stream: keep whole fragments that fit, then linear data.
		b.head = min(b.head, rest)
		n := b.head
		var fr []fakeFrag
		for _, f := range b.frags {
			if n+f.size > rest {
				break
			}
			fr = append(fr, f)
			n += f.size
		}
		if n < rest {
			fr = append(fr, fakeFrag{rest - n, false})
		}
		b.frags = fr
	}
	return b
}

// arrive delivers the peer's next burst: one or more skbs, or its end. It reports
// whether anything arrived.
func (k *fakeKernel) arrive() bool {
	if k.ended {
		return false
	}
	for i := 1 + int(k.src.byte()%8); i > 0 && k.sent < k.total; i-- {
		b := k.nextSkb(k.total - k.sent)
		k.queue = append(k.queue, b)
		k.sent += b.len()
	}
	if k.sent >= k.total && (k.src.byte()%2 == 0 || k.inq() == 0) {
		k.ended = true
		k.shut = true
		if k.reset {
			k.sockErr = unix.ECONNRESET
		} else {
			k.fin = true
		}
	}
	if k.readable() {
		k.pending = true
	}
	k.spin = 0
	k.clock += time.Duration(1+int(k.src.byte())) * time.Microsecond
	return true
}

// maybeArrive lets data arrive while the reader is in a syscall, now and then.
func (k *fakeKernel) maybeArrive() {
	if k.src.rare(24) {
		k.arrive()
	}
}

// consume takes n bytes out of the queue.
func (k *fakeKernel) consume(n int) {
	k.read += n
	for len(k.queue) > 0 && k.queue[0].start+k.queue[0].len() <= k.read {
		k.queue = k.queue[1:]
	}
	k.spin = 0
}

// fill writes the stream bytes starting at offset off into p.
func fillPat(p []byte, off int) {
	for i := range p {
		p[i] = fakePat(int64(off + i))
	}
}

// Read is the fake rawConn: it runs f, and when f asks to wait, it plays the poller:
// an event that arrived meanwhile wakes the reader at once; otherwise the peer sends its
// next burst, or the read deadline passes.
func (k *fakeKernel) Read(f func(fd uintptr) bool) error {
	k.pending = false // pollDesc.prepareRead forgets earlier events
	for {
		if f(fakeFD) {
			return nil
		}
		if k.pending {
			k.pending = false
			continue
		}
		if k.readable() {
			k.fatalf("%s waits in the poller on a readable socket (%d bytes queued, lowat %d, shutdown %v, error %v): no event will wake it (%v)",
				k.inCall, k.inq(), k.lowat, k.shut, k.sockErr, k)
		}
		if k.lowat > 1 && k.inCall != "Next" && !k.batchedWait() {
			k.fatalf("%s waits with SO_RCVLOWAT %d and no bound: a peer that sends less stalls", k.inCall, k.lowat)
		}
		if k.deadlines < 6 && k.src.rare(10) {
			k.deadlines++
			return &net.OpError{Op: "raw-read", Net: "tcp", Err: os.ErrDeadlineExceeded}
		}
		if k.batchedWait() && k.src.rare(64) {
			// The peer sends less than the mark and waits: only the bound ends the
			// wait. Lowering the mark wakes the reader when bytes are queued.
			k.fires++
			k.timer.fire()
			if k.lowat != 1 {
				k.fatalf("%s: the bound left SO_RCVLOWAT at %d", k.inCall, k.lowat)
			}
			if k.pending {
				k.pending = false
				continue
			}
		}
		for !k.readable() {
			if !k.arrive() {
				k.fatalf("%s waits for data after the peer's end: it would block forever", k.inCall)
			}
		}
		k.pending = false
	}
}

// findRes returns the reservation holding addr and the offset in it.
func (k *fakeKernel) findRes(addr uintptr) (*fakeRes, int) {
	// The newest first: the unmapped padding of a reservation whose ring is still
	// mapped (in the quarantine) may be reserved again.
	for i := len(k.res) - 1; i >= 0; i-- {
		r := k.res[i]
		if addr >= r.addr() && addr < r.addr()+uintptr(r.size()) {
			return r, int(addr - r.addr())
		}
	}
	return nil, 0
}

// span checks that [addr, addr+length) is page aligned and lies in one reservation in
// pages none of which is unmapped, and returns the reservation and the first page.
func (k *fakeKernel) span(op string, addr unsafe.Pointer, length uintptr) (*fakeRes, int) {
	a := uintptr(addr)
	if a%uintptr(pageSize) != 0 || length%uintptr(pageSize) != 0 || length == 0 {
		k.fatalf("%s(%#x, %d): not whole pages", op, a, length)
	}
	r, off := k.findRes(a)
	if r == nil || off+int(length) > r.size() {
		k.fatalf("%s(%#x, %d): not memory the socket reserved", op, a, length)
	}
	p0 := off / pageSize
	for i := p0; i < p0+int(length)/pageSize; i++ {
		if r.pages[i] == pgUnmapped {
			k.fatalf("%s(%#x, %d): page %d already unmapped", op, a, length, i)
		}
	}
	return r, p0
}

// write runs fn on the pages [p0, p0+n) of r with write access.
func (k *fakeKernel) write(r *fakeRes, p0, n int, fn func(b []byte)) {
	b := unsafe.Slice((*byte)(unsafe.Add(r.base, p0*pageSize)), n*pageSize)
	if err := unix.Mprotect(b, unix.PROT_READ|unix.PROT_WRITE); err != nil {
		k.fatalf("mprotect: %v", err)
	}
	fn(b)
	if err := unix.Mprotect(b, unix.PROT_READ); err != nil {
		k.fatalf("mprotect: %v", err)
	}
}

func (k *fakeKernel) reserveFn(fd int, length uintptr) (unsafe.Pointer, error) {
	k.checkFD(fd)
	k.reserves++
	if k.faults.kind&faultReserve != 0 {
		k.injected = append(k.injected, "mmap ENOMEM")
		return nil, unix.ENOMEM
	}
	if length == 0 || length%uintptr(pageSize) != 0 {
		return nil, unix.EINVAL
	}
	p, err := unix.MmapPtr(-1, 0, nil, length, unix.PROT_READ, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
	if err != nil {
		return nil, err
	}
	r := &fakeRes{base: p, pages: make([]int, int(length)/pageSize)}
	for i := range r.pages {
		r.pages[i] = pgEmpty
	}
	k.mu.Lock()
	// A reservation unmapped whole is forgotten: the kernel may hand its addresses out
	// again, to this one.
	k.res = slices.DeleteFunc(k.res, func(o *fakeRes) bool {
		return !slices.ContainsFunc(o.pages, func(s int) bool { return s != pgUnmapped })
	})
	k.res = append(k.res, r)
	k.mu.Unlock()
	return p, nil
}

func (k *fakeKernel) unmapFn(addr unsafe.Pointer, length uintptr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		// A cleanup after the test: unmap quietly.
		if r, off := k.findRes(uintptr(addr)); r != nil {
			for i := off / pageSize; i < (off+int(length))/pageSize; i++ {
				r.pages[i] = pgUnmapped
			}
		}
		return unix.MunmapPtr(addr, length)
	}
	r, p0 := k.span("munmap", addr, length)
	for i := p0; i < p0+int(length)/pageSize; i++ {
		r.pages[i] = pgUnmapped
	}
	return unix.MunmapPtr(addr, length)
}

func (k *fakeKernel) dontneedFn(addr unsafe.Pointer, length uintptr) error {
	k.dnCalls++
	if k.faults.kind&faultDontneed != 0 && k.dnCalls == k.faults.dnAt {
		k.injected = append(k.injected, "madvise EINVAL")
		return unix.EINVAL
	}
	r, p0 := k.span("madvise", addr, length)
	n := int(length) / pageSize
	k.write(r, p0, n, func(b []byte) {
		for i := range n {
			if r.pages[p0+i] == pgAnon {
				clear(b[i*pageSize : (i+1)*pageSize])
				continue
			}
			scribble(b[i*pageSize : (i+1)*pageSize])
			r.pages[p0+i] = pgEmpty
		}
	})
	return nil
}

func (k *fakeKernel) mapAnonFn(addr unsafe.Pointer, length uintptr) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		// A cleanup after the test (a dropped conn's ring retired): map quietly.
		_, err := unix.MmapPtr(-1, 0, addr, length, unix.PROT_READ,
			unix.MAP_FIXED|unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		return err
	}
	r, p0 := k.span("mmap MAP_FIXED", addr, length)
	if _, err := unix.MmapPtr(-1, 0, addr, length, unix.PROT_READ,
		unix.MAP_FIXED|unix.MAP_PRIVATE|unix.MAP_ANONYMOUS); err != nil {
		return err
	}
	for i := p0; i < p0+int(length)/pageSize; i++ {
		r.pages[i] = pgAnon
	}
	return nil
}

func (k *fakeKernel) setRcvlowatFn(fd int, n int) error {
	k.checkFD(fd)
	k.lowats++
	if n > 1 && k.inCall != "Next" && (k.rcvbuf == 0 || n > k.rcvbuf/4) {
		// tcp_set_rcvlowat: above tcp_space_from_win(n) > sk_rcvbuf the window clamp
		// becomes n. A batched mark stays under a quarter of SO_RCVBUF.
		k.fatalf("%s sets SO_RCVLOWAT %d with SO_RCVBUF %d: the window would be clamped", k.inCall, n, k.rcvbuf)
	}
	k.lowat = max(n, 1)
	if k.readable() {
		k.pending = true // tcp_set_rcvlowat calls tcp_data_ready
	}
	return nil
}

// rcvBufFn is getsockopt SO_RCVBUF: autotuning may have grown it since the last call.
func (k *fakeKernel) rcvBufFn(fd int) (int, error) {
	k.checkFD(fd)
	if k.rcvbuf == 0 || k.src.rare(64) {
		k.rcvbuf = max(k.rcvbuf, []int{128 << 10, 1 << 20, 4 << 20, 32 << 20}[k.src.byte()%4])
	}
	return k.rcvbuf, nil
}

func (k *fakeKernel) recvFn(fd int, p []byte) (int, error) {
	k.checkFD(fd)
	k.recvCalls++
	k.maybeArrive()
	if len(p) == 0 {
		return 0, nil
	}
	if q := k.inq(); q > 0 {
		n := min(len(p), q)
		fillPat(p[:n], k.read)
		k.consume(n)
		k.recvBytes += n
		return n, nil
	}
	return k.emptyQueue()
}

// emptyQueue is what recv(2) answers with nothing queued: a pending socket error (which
// sock_error clears), 0 at the end of the stream, or EAGAIN.
func (k *fakeKernel) emptyQueue() (int, error) {
	if e := k.sockErr; e != 0 {
		k.sockErr = 0
		return 0, e
	}
	if k.shut {
		return 0, nil
	}
	return 0, unix.EAGAIN
}

// peekFn is recv(2) of one byte with MSG_PEEK: like recvFn, but nothing is consumed (a
// pending error is, as sock_error clears it).
func (k *fakeKernel) peekFn(fd int) (int, error) {
	k.checkFD(fd)
	k.peeks++
	k.maybeArrive()
	if k.inq() > 0 {
		return 1, nil
	}
	return k.emptyQueue()
}

// zerocopyFn is tcp_zerocopy_receive plus the getsockopt wrapper around it.
func (k *fakeKernel) zerocopyFn(fd int, uzc *zerocopyReceive) error {
	k.checkFD(fd)
	k.zcCalls++
	k.maybeArrive()
	if k.faults.kind&faultZerocopy != 0 && k.zcCalls == k.faults.zcAt {
		k.injected = append(k.injected, "getsockopt "+k.faults.zcErr.Error())
		return k.faults.zcErr
	}
	if k.src.rare(4) {
		return unix.EINTR
	}
	if uzc.CopybufLen != 0 {
		k.fatalf("copybuf is not modelled")
	}
	zc := *uzc // the kernel works on a copy and writes it back only on success
	zc.MsgFlags = 0
	if zc.Address%uint64(pageSize) != 0 {
		return unix.EINVAL
	}
	inq := k.inq()
	mapped, skip := 0, 0
	if inq < pageSize {
		skip = inq
		if inq == 0 && k.fin {
			return unix.EIO
		}
	} else {
		r, off := k.findRes(uintptr(zc.Address))
		if r == nil || r.pages[off/pageSize] == pgUnmapped || r.pages[off/pageSize] == pgAnon {
			return unix.EINVAL // find_tcp_vma: not this socket's VMA
		}
		vmaLen := 0
		for i := off / pageSize; i < len(r.pages) && (r.pages[i] == pgEmpty || r.pages[i] == pgMapped); i++ {
			vmaLen += pageSize
		}
		avail := min(int(zc.Length), vmaLen, inq)
		total := avail &^ (pageSize - 1)
		if total == 0 {
			skip = avail
		} else {
			p0, n := off/pageSize, total/pageSize
			k.write(r, p0, n, func(b []byte) {
				for i := range n {
					if r.pages[p0+i] == pgMapped && zc.Flags&tcpZerocopyFlagTLBCleanHint != 0 {
						k.hintConflicts++ // the kernel zaps and retries (-EBUSY)
					}
					r.pages[p0+i] = pgEmpty
				}
				scribble(b)
				mapped, skip = k.mapPages(b, total)
				for i := range mapped / pageSize {
					r.pages[p0+i] = pgMapped
				}
			})
		}
		if mapped > 0 {
			k.consume(mapped)
			k.mappedBytes += mapped
			if mapped == total {
				skip = 0
			}
		}
	}
	if mapped == 0 && skip == 0 && k.fin {
		return unix.EIO
	}
	zc.Length = uint32(mapped)
	zc.RecvSkipHint = uint32(skip)
	zc.Err = 0
	if k.sockErr != 0 {
		zc.Err = -int32(k.sockErr) // sock_error(): negative, and cleared
		k.sockErr = 0
	}
	zc.Inq = uint32(k.inq())
	if zc.Inq == 0 && k.fin {
		zc.Inq = 1 // tcp_inq_hint after a FIN
	}
	*uzc = zc
	return nil
}

// mapPages is the mapping loop of tcp_zerocopy_receive: it maps whole mappable
// fragments from the head of the queue into b (up to total bytes) and returns the bytes
// mapped and the skip hint (bytes to recv before the next mappable byte).
func (k *fakeKernel) mapPages(b []byte, total int) (mapped, skip int) {
	si, fi := -1, 0
	var skb *fakeSkb
	for mapped+pageSize <= total {
		if skip < pageSize {
			offset := 0
			if si >= 0 {
				if skip > 0 {
					break
				}
				si++
			} else {
				si = 0 // the queue head holds copied_seq
				offset = k.read - k.queue[0].start
			}
			skb = &k.queue[si]
			skip = skb.len() - offset
			o := offset - skb.head // skb_advance_to_frag
			if o < 0 {
				break
			}
			fi = 0
			for o > 0 && o >= skb.frags[fi].size {
				o -= skb.frags[fi].size
				fi++
			}
			if o > 0 {
				break
			}
		}
		if !skb.frags[fi].mappable { // find_next_mappable_frag
			mo := 0
			for j := fi; mo < skip && j < len(skb.frags) && !skb.frags[j].mappable; j++ {
				mo += skb.frags[j].size
			}
			skip = mo
			break
		}
		fillPat(b[mapped:mapped+pageSize], k.read+mapped)
		mapped += pageSize
		skip -= pageSize
		fi++
	}
	return mapped, skip
}

// finish marks the test over and checks that the conn released its memory: every page
// reserved is unmapped, or replaced by mapAnon (waiting in the quarantine).
func (k *fakeKernel) finish() {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	if k.tb.Failed() {
		// The conn was abandoned mid-call: free its memory for the next run.
		for _, r := range k.res {
			for i, s := range r.pages {
				if s != pgUnmapped {
					unix.MunmapPtr(unsafe.Add(r.base, i*pageSize), uintptr(pageSize))
					r.pages[i] = pgUnmapped
				}
			}
		}
		return
	}
	for _, r := range k.res {
		for i, s := range r.pages {
			if s == pgEmpty || s == pgMapped {
				k.tb.Errorf("fake kernel: page %d of the reservation at %#x still mapped after Close", i, r.addr())
				return
			}
		}
	}
}

func (k *fakeKernel) String() string {
	return fmt.Sprintf("total=%d reset=%v sent=%d read=%d zc=%d recv=%d mapped=%d copied=%d faults=%v",
		k.total, k.reset, k.sent, k.read, k.zcCalls, k.recvCalls, k.mappedBytes, k.recvBytes, k.injected)
}
