//go:build !linux

package doctor

// hostOS adds nothing off Linux: zero-copy receive does not exist here, and the
// facts the checks look at are Linux's.
func hostOS(h *Host) {}

// headerSplit cannot ask a device off Linux.
func headerSplit(name string) (string, string) {
	return "unknown", "queried through Linux's ethtool netlink only"
}
