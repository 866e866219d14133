//go:build linux

package zcnet

import (
	"bufio"
	"bytes"
	"fmt"
	"os"
	"strconv"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"
)

// zerocopyRecv reports that this platform has the TCP_ZEROCOPY_RECEIVE path.
const zerocopyRecv = true

// tcpZerocopyFlagTLBCleanHint is TCP_RECEIVE_ZEROCOPY_FLAG_TLB_CLEAN_HINT: the target
// range holds no pages, so the kernel may skip zapping it before it maps.
const tcpZerocopyFlagTLBCleanHint = 0x1

var linuxSys = sysCalls{
	reserve: func(fd int, length uintptr) (unsafe.Pointer, error) {
		return unix.MmapPtr(fd, 0, nil, length, unix.PROT_READ, unix.MAP_SHARED)
	},
	unmap: unix.MunmapPtr,
	dontneed: func(addr unsafe.Pointer, length uintptr) error {
		return unix.Madvise(unsafe.Slice((*byte)(addr), length), unix.MADV_DONTNEED)
	},
	zerocopy: func(fd int, zc *zerocopyReceive) error {
		l := uint32(unsafe.Sizeof(*zc))
		_, _, e := unix.Syscall6(unix.SYS_GETSOCKOPT, uintptr(fd), unix.IPPROTO_TCP,
			unix.TCP_ZEROCOPY_RECEIVE, uintptr(unsafe.Pointer(zc)), uintptr(unsafe.Pointer(&l)), 0)
		if e != 0 {
			return e
		}
		return nil
	},
	read: func(fd int, p []byte) (int, error) {
		n, err := unix.Read(fd, p)
		return max(n, 0), err
	},
	peek: func(fd int) (int, error) {
		var b [1]byte
		// A raw recvfrom: unix.Recvfrom allocates a sockaddr at every call.
		n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
			unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
		if e != 0 {
			return 0, e
		}
		return int(n), nil
	},
	mapAnon: func(addr unsafe.Pointer, length uintptr) error {
		_, err := unix.MmapPtr(-1, 0, addr, length, unix.PROT_READ,
			unix.MAP_FIXED|unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		return err
	},
	setRcvlowat: func(fd int, n int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, n)
	},
	splice: func(in, out, n int) (int, error) {
		m, err := unix.Splice(in, nil, out, nil, n, unix.SPLICE_F_MOVE|unix.SPLICE_F_NONBLOCK)
		return int(max(m, 0)), err
	},
	inq: func(fd int) (int, error) {
		return unix.IoctlGetInt(fd, unix.SIOCINQ)
	},
	rcvBuf: func(fd int) (int, error) {
		return unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUF)
	},
	rcvMSS: func(fd int) (int, error) {
		ti, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return 0, err
		}
		return int(ti.Rcv_mss), nil
	},
}

// defaultSys is the syscall layer new Conns use.
var defaultSys = &linuxSys

// pageSize is the kernel's page size; every mapping length is a multiple of it.
var pageSize = unix.Getpagesize()

func isEAGAIN(err error) bool { return err == unix.EAGAIN }
func isEINTR(err error) bool  { return err == unix.EINTR }
func isEIO(err error) bool    { return err == unix.EIO }

// clockThread is the CPU-time clock the auto mode prices fills with.
const clockThread = unix.CLOCK_THREAD_CPUTIME_ID

// setMSS sets TCP_MAXSEG on a socket, so that a listener advertises it in its SYN-ACKs.
func setMSS(fd uintptr, mss int) error {
	return unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss)
}

// Supported returns nil when this process can receive with TCP_ZEROCOPY_RECEIVE, and
// otherwise an error saying why not (the kernel lacks the option, a sandbox refuses mmap
// or getsockopt on sockets, ...). Conns work either way: where it is not nil they copy.
// The answer is probed once and cached.
func Supported() error { return supported() }

var supported = sync.OnceValue(func() error { return probeSupport(defaultSys) })

// probeSupport tries the two kernel operations the fast path needs on a fresh TCP socket:
// reserving a VMA on it and a TCP_ZEROCOPY_RECEIVE call.
func probeSupport(s *sysCalls) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		fd, err = unix.Socket(unix.AF_INET6, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	}
	if err != nil {
		return fmt.Errorf("zcnet: cannot create a TCP socket to probe: %w", err)
	}
	defer unix.Close(fd)
	p, err := s.reserve(fd, uintptr(pageSize))
	if err != nil {
		return fmt.Errorf("zcnet: mmap on a TCP socket refused: %w", err)
	}
	s.unmap(p, uintptr(pageSize))
	var zc zerocopyReceive
	if err := s.zerocopy(fd, &zc); err != nil {
		if err == unix.ENOPROTOOPT {
			return fmt.Errorf("zcnet: kernel lacks TCP_ZEROCOPY_RECEIVE (Linux 4.18+): %w", err)
		}
		return fmt.Errorf("zcnet: getsockopt TCP_ZEROCOPY_RECEIVE refused: %w", err)
	}
	return nil
}

// cpuClock returns a CPU-time clock in nanoseconds, or 0 when it cannot be read.
func cpuClock(id int32) int64 {
	var ts unix.Timespec
	if unix.ClockGettime(id, &ts) != nil {
		return 0
	}
	return ts.Nano()
}

// hostLimits derives the default Limits from this host and process: vm.max_map_count
// and the maps the process has now, RLIMIT_AS and the address space in use, and the
// memory (MemTotal, or the cgroup's memory.max when lower).
func hostLimits() Limits {
	l := Limits{MaxRings: 16384, MaxRingBytes: 1 << 62, MaxPinnedBytes: 1 << 30}
	if slots, err := readNumber("/proc/sys/vm/max_map_count"); err == nil {
		used, _ := countLines("/proc/self/maps")
		l.MaxRings = int(max(slots-used, 0) / 2)
	}
	var rl unix.Rlimit
	if unix.Getrlimit(unix.RLIMIT_AS, &rl) == nil && rl.Cur != unix.RLIM_INFINITY {
		used, _ := statusKiB("VmSize:")
		l.MaxRingBytes = max(clampLimit(rl.Cur)-used<<10, 0) / 4
	}
	mem, err := statusField("/proc/meminfo", "MemTotal:")
	if err == nil {
		mem <<= 10
		if cg, err := readNumber("/sys/fs/cgroup/memory.max"); err == nil && cg < mem {
			mem = cg
		}
		l.MaxPinnedBytes = max(mem/16, 64<<20)
	}
	return l
}

// readNumber reads a file holding one decimal number ("max" and the like fail).
func readNumber(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(string(bytes.TrimSpace(b)), 10, 64)
}

// countLines counts the lines of a file.
func countLines(path string) (int64, error) {
	b, err := os.ReadFile(path)
	return int64(bytes.Count(b, []byte("\n"))), err
}

// statusKiB reads a "Name: N kB" field of /proc/self/status.
func statusKiB(name string) (int64, error) { return statusField("/proc/self/status", name) }

// statusField reads the number after name in a "Name: N kB" file.
func statusField(path, name string) (int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := bytes.CutPrefix(sc.Bytes(), []byte(name)); ok {
			fs := bytes.Fields(rest)
			if len(fs) > 0 {
				return strconv.ParseInt(string(fs[0]), 10, 64)
			}
		}
	}
	return 0, errNoLimit
}
