package zcnet

import (
	"bufio"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// unackedBytes returns the bytes written to c that the peer has not acknowledged yet
// (SIOCOUTQ).
func unackedBytes(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return 0, err
	}
	var q int
	var qerr error
	if err := rc.Control(func(fd uintptr) { q, qerr = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ) }); err != nil {
		return 0, err
	}
	return q, qerr
}

// socketInode returns the inode of c's socket, which names its ring in /proc/self/maps.
func socketInode(t testing.TB, c *Conn) uint64 {
	t.Helper()
	rc, err := c.tc.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return st.Ino
}

// ringRssKiB returns the resident size of the VMAs mapping the socket with inode ino (a
// conn's ring) from /proc/self/smaps, and whether there is one.
func ringRssKiB(t testing.TB, ino uint64) (int64, bool) {
	t.Helper()
	f, err := os.Open("/proc/self/smaps")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	name := "socket:[" + strconv.FormatUint(ino, 10) + "]"
	var rss int64
	found, in := false, false
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := sc.Text()
		if fields := strings.Fields(line); len(fields) >= 5 && strings.Contains(fields[0], "-") && !strings.HasSuffix(fields[0], ":") {
			in = len(fields) >= 6 && fields[5] == name
			found = found || in
			continue
		}
		if rest, ok := strings.CutPrefix(line, "Rss:"); ok && in {
			k, err := strconv.ParseInt(strings.Fields(rest)[0], 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			rss += k
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return rss, found
}

// fillMapSlots takes all but leave of the process's memory-map slots (vm.max_map_count)
// with filler mappings: one reservation with every other page made read-write, so that
// each such page adds two mappings. (Read-write: read-only private mappings are the
// library's, see libraryMappings.) It skips the test where the count is unreadable.
func fillMapSlots(t *testing.T, leave int) {
	slots, err := readNumber("/proc/sys/vm/max_map_count")
	if err != nil {
		t.Skipf("vm.max_map_count unreadable: %v", err)
	}
	used, _ := mapsCount(t)
	fill := (int(slots) - used - leave) / 2
	mem, err := unix.Mmap(-1, 0, 2*fill*pageSize, unix.PROT_NONE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_NORESERVE)
	if err != nil {
		t.Fatal(err)
	}
	for i := range fill {
		if err := unix.Mprotect(mem[2*i*pageSize:(2*i+1)*pageSize], unix.PROT_READ|unix.PROT_WRITE); err != nil {
			t.Fatalf("filler mapping %d: %v", i, err)
		}
	}
	after, _ := mapsCount(t)
	t.Logf("filler: %d mappings; %d of %d slots in use, %d free", 2*fill, after, slots, int(slots)-after)
}
