// Package zcnet gives Go servers Linux's zero-copy TCP receive (TCP_ZEROCOPY_RECEIVE)
// behind net.Listener and net.Conn.
//
// Linux can map whole pages of a TCP receive queue into a process instead of copying
// them: mmap on the socket reserves address space, and getsockopt(IPPROTO_TCP,
// TCP_ZEROCOPY_RECEIVE) maps as many whole pages as it can into it, reporting how many
// bytes must be read with recv(2) to get past a part it could not map. A [Conn] wraps that
// in a net.Conn. Each Conn reserves its own range of address space (its ring) at the first
// read that maps, and gives it back when a read has waited 100 ms with nothing mapped
// pending, so an idle conn holds no mapping; consumed pages are released once per pass
// over the ring, so that the TLB shootdowns that unmapping sends to the process's CPUs
// are rare. What cannot be mapped (unaligned payload, tails under a page) is read with
// recv(2) into the caller's buffer or a pooled one, so the stream comes out exact
// whatever the peer sends. Process-wide [Limits] bound the rings and the mapped pages.
//
// # Drop-in use
//
// [Listen] replaces net.Listen; nothing else has to change:
//
//	ln, err := zcnet.Listen("tcp", ":8080") // was: net.Listen("tcp", ":8080")
//	if err != nil {
//		log.Fatal(err)
//	}
//	log.Fatal(http.Serve(ln, handler)) // net/http, crypto/tls, ... work unchanged
//
// [ListenConfig], [NewListener], [Dial], [Dialer] and [NewConn] cover the other ways of
// getting a conn. A Conn behaves as a *net.TCPConn: deadlines, Close unblocking pending
// calls, concurrent calls, io.EOF at the end of the stream, other errors as *net.OpError
// wrapping what net.TCPConn's would (net.ErrClosed, os.ErrDeadlineExceeded,
// ECONNRESET). Waiting goes through the Go netpoller and the package starts no goroutine
// per conn. The write side is the socket's own (Write,
// and ReadFrom, so io.Copy(conn, file) still uses sendfile).
//
// # Modes
//
// [Options].Mode chooses how a conn receives. [ModeAuto], the default, copies as
// net.TCPConn does, and now and then probes the mapping path on this host and this
// stream: it maps only where mapping measured clearly cheaper, and probes ever more
// rarely where it does not; a conn receiving small messages never probes, whatever its
// Read buffer. [ModeZeroCopy] maps whatever the kernel can map, and receives a stream
// that keeps mapping nothing with recv(2), trying mapping again ever more rarely.
// [ModeCopy] never maps. Where the kernel cannot map at all ([Supported] returns an
// error: not Linux, Linux before 4.18, a sandbox refusing the call) every conn copies,
// like a net.TCPConn.
//
// The kernel maps a page only when a TCP segment's payload fills it exactly. That needs a
// maximum segment size of one page of payload ([Options].PageAlignedMSS on the listener),
// or a NIC that splits headers from payload; on loopback, the sender's pages must also be
// order-0 (a sender using MSG_ZEROCOPY, or net.core.high_order_alloc_disable=1).
//
// # Reading: Read, Next, WriteTo
//
// [Conn.Read] copies into the caller's buffer and never hands out mapped memory.
//
// [Conn.Next](n) returns the next n bytes as a view, pointing into the mapped pages
// where they lie contiguously there, else into a pooled buffer. The view belongs to the
// conn: it is valid only until the next read-side call on that conn (Read, Next,
// WriteTo, Close, File, SyscallConn's Read), and only while the Conn is reachable, after
// which its memory is reused or unmapped. Copy it to keep it. Reachability is not
// lexical: a Conn may be collected (and so closed) after its last use while a view is
// still read; a deferred Close in the handler, or runtime.KeepAlive(conn) after the
// view's last use, keeps it. A view used after Close (or collection) reads zeros while
// the closed ring's address range waits in a bounded, process-wide quarantine, counted by
// [Limits]; once the range is unmapped, the read faults or sees whatever is mapped there
// later. [Conn.Next] says what a stale view can see.
//
// [Conn.WriteTo](w), which io.Copy(w, conn) calls, passes w slices of the mapping. As the
// io.Writer contract says, w must not keep them once Write returns.
//
// A view that points into the mapping is read-only: the mapping is PROT_READ. Writing
// into it is a fatal fault, not a panic: the write raises SIGSEGV, the runtime prints
// "unexpected fault address" and "fatal error: fault" and the process exits; deferred
// functions and recover do not run. (runtime/debug.SetPanicOnFault turns such faults into
// panics only in the goroutine that calls it, a debugging aid.) Copy a view before
// modifying it, whether the code that modifies it is yours or a callee's (an in-place
// decoder, a crypto/cipher stream XORing in place).
// To find code that writes into views, or keeps them past their lifetime, set
// [Options].CopyViews: Next and WriteTo then hand out copies instead of mapped memory,
// so such code works, and a test comparing the output with and without it shows the
// difference.
//
// # Failure modes
//
// A conn never loses bytes to a failure of the mapping path. When mmap is refused
// (sandbox, vm.max_map_count, ENOMEM), the mapping call is refused or unknown
// (ENOPROTOOPT, EPERM, EINVAL) or madvise fails, the conn copies for the rest of its life
// and [Stats].FallbackReason names the failure. After the peer closes, reads return
// io.EOF as net.TCPConn's do; a reset is returned as ECONNRESET after the bytes that
// preceded it. Bad arguments get errors, never panics: a network other than tcp, tcp4 or
// tcp6 given to Listen or DialConn ([Dial] and [Dialer.DialContext] pass other networks,
// such as unix, through to net.Dialer unchanged), a negative or too large [Options].RingSize, [Conn.Next] with a negative count
// ([ErrNegativeCount]) or one above the ring size ([ErrTooLarge]).
//
// [Conn.SyscallConn] gives socket options, but its RawConn is not net's (it has no PollFD)
// and its Read refuses while the conn holds bytes: code reading the descriptor directly
// would skip them. So io.Copy(tcpConn, conn) and io.Copy(file, conn) go through WriteTo,
// which writes the bytes the conn holds and then, where the conn copies, splices the rest
// as net.TCPConn does; both stay exact.
//
// # Stats
//
// [Conn.Stats] and [Listener.Stats] count bytes received by mapping and by copying (the
// copied ones by cause), mapping and recv calls, waits, views handed out, releases of
// mapped pages, and the reason a conn stopped mapping; [Stats.MappedShare] is the share
// of the stream that was mapped. [Listener.Publish] puts a listener's Stats in expvar
// (/debug/vars). On an ordinary client's traffic MappedShare is often 0: that is the
// page-order condition above, not a fault.
package zcnet
