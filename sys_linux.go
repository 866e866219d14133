//go:build linux

package zcnet

import (
	"fmt"
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
	recv: func(fd int, p []byte) (int, error) {
		for {
			n, err := unix.Read(fd, p)
			if err != unix.EINTR {
				if n < 0 {
					n = 0
				}
				return n, err
			}
		}
	},
	peek: func(fd int) (int, error) {
		var b [1]byte
		for {
			// A raw recvfrom: unix.Recvfrom allocates a sockaddr at every call.
			n, _, e := unix.Syscall6(unix.SYS_RECVFROM, uintptr(fd), uintptr(unsafe.Pointer(&b[0])), 1,
				unix.MSG_PEEK|unix.MSG_DONTWAIT, 0, 0)
			switch e {
			case 0:
				return int(n), nil
			case unix.EINTR:
				continue
			}
			return 0, e
		}
	},
	mapAnon: func(addr unsafe.Pointer, length uintptr) error {
		_, err := unix.MmapPtr(-1, 0, addr, length, unix.PROT_READ,
			unix.MAP_FIXED|unix.MAP_PRIVATE|unix.MAP_ANONYMOUS)
		return err
	},
	setRcvlowat: func(fd int, n int) error {
		return unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, n)
	},
}

// defaultSys is the syscall layer new Conns use.
var defaultSys = &linuxSys

// pageSize is the kernel's page size; every mapping length is a multiple of it.
var pageSize = unix.Getpagesize()

func isEAGAIN(err error) bool { return err == unix.EAGAIN }
func isEINTR(err error) bool  { return err == unix.EINTR }
func isEIO(err error) bool    { return err == unix.EIO }

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

// threadCPU returns the calling thread's CPU time in nanoseconds
// (CLOCK_THREAD_CPUTIME_ID), or 0 when the clock cannot be read.
func threadCPU() int64 {
	var ts unix.Timespec
	if unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts) != nil {
		return 0
	}
	return ts.Nano()
}
