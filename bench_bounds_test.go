//go:build linux

package zcnet

import (
	"testing"
)

// BenchmarkNextLarge takes one Next of the whole ring (RingSize = MaxRingSize, 1 GiB) per
// iteration, from a sender in this process: in place in the mapping (aligned sender,
// ModeZeroCopy), or gathered in a buffer that grows geometrically (unaligned sender, or
// ModeCopy). It reports MB/s and the bytes allocated per byte received (alloc-B/B): a
// gather that grew by what each fill took would copy quadratically.
//
//	go test -run '^$' -bench NextLarge -benchtime 3x .
func BenchmarkNextLarge(b *testing.B) {
	const size = MaxRingSize
	for _, send := range []string{"aligned", "unaligned"} {
		for _, m := range []Mode{ModeZeroCopy, ModeCopy} {
			b.Run("send="+send+"/recv="+m.String(), func(b *testing.B) {
				mappable := send == "aligned"
				c, s := pairWith(b, Options{Mode: m, RingSize: size}, mappable)
				sent := sendStream(s, int64(b.N)*size, mappable, false)
				b.SetBytes(size)
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; i < b.N; i++ {
					v, err := c.Next(size)
					if err != nil {
						b.Fatal(err)
					}
					if off := checkPattern(int64(i)*size, v[:1<<20]); off >= 0 {
						b.Fatalf("byte %d of view %d differs from the pattern", off, i)
					}
					if off := checkPattern(int64(i)*size+size-1<<20, v[size-1<<20:]); off >= 0 {
						b.Fatalf("byte %d of view %d's tail differs from the pattern", off, i)
					}
				}
				b.StopTimer()
				st := c.Stats()
				c.Close()
				<-sent
				b.ReportMetric(100*st.MappedShare(), "mapped-%")
			})
		}
	}
}
