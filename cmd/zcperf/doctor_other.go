//go:build !linux

package main

import (
	"net"
	"os"
	"runtime"

	"github.com/zcnet/zcnet"
)

// doctorHost gathers what can be known off Linux: zero-copy receive does not exist here.
func doctorHost() docHost {
	h := docHost{
		OS:                    runtime.GOOS,
		Seccomp:               -1,
		MaxMapCount:           -1,
		Mappings:              -1,
		RlimitAS:              -2,
		VirtualMemory:         -1,
		PageSize:              os.Getpagesize(),
		HighOrderAllocDisable: -1,
	}
	if err := zcnet.Supported(); err != nil {
		h.SupportedError = err.Error()
	}
	ifs, err := net.Interfaces()
	if err != nil {
		h.InterfacesError = "cannot list interfaces: " + err.Error()
	}
	for _, ifc := range ifs {
		if ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		h.Interfaces = append(h.Interfaces, docIface{
			Name:              ifc.Name,
			Up:                ifc.Flags&net.FlagUp != 0,
			MTU:               ifc.MTU,
			PayloadIPv4:       docPayload(ifc.MTU, docIPv4Header),
			PayloadIPv6:       docPayload(ifc.MTU, docIPv6Header),
			HeaderSplit:       "unknown",
			HeaderSplitDetail: "queried through Linux's ethtool netlink only",
		})
	}
	return h
}

// docThreadClock cannot read a thread's CPU time here: it returns a clock of zeros.
func docThreadClock() func() float64 { return func() float64 { return 0 } }
