package zcsend

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
)

func TestMain(m *testing.M) {
	if ran, err := RunFromEnv(); ran {
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// stream returns n bytes of the pattern from offset 0.
func stream(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = Pattern(int64(i))
	}
	return p
}

// TestVerifier feeds the pattern across a period boundary in uneven writes, then the same
// with one byte changed, and checks the verdict and the offset it names.
func TestVerifier(t *testing.T) {
	s := stream(2*Period + 12345)
	var v Verifier
	for rest := s; len(rest) > 0; {
		k := min(len(rest), 77777)
		v.Write(rest[:k])
		rest = rest[k:]
	}
	if v.Len() != int64(len(s)) || v.Err() != nil {
		t.Fatalf("intact stream: Len %d (want %d), Err %v", v.Len(), len(s), v.Err())
	}
	const bad = Period + 4321
	s[bad] ^= 0xff
	v = Verifier{}
	io.Copy(&v, bytes.NewReader(s))
	err := v.Err()
	if err == nil || !strings.Contains(err.Error(), fmt.Sprintf("1 of %d bytes", len(s))) ||
		!strings.Contains(err.Error(), fmt.Sprintf("offset %d", bad)) {
		t.Fatalf("one changed byte at %d: Err %v", bad, err)
	}
}

// nexter serves Next from a byte slice as a *zcnet.Conn does at the end of a stream.
type nexter struct{ p []byte }

func (n *nexter) Next(k int) ([]byte, error) {
	if len(n.p) == 0 {
		return nil, io.EOF
	}
	if len(n.p) < k {
		p := n.p
		n.p = nil
		return p, io.ErrUnexpectedEOF
	}
	p := n.p[:k]
	n.p = n.p[k:]
	return p, nil
}

// TestDrainLoops drains the pattern with DrainRead and DrainNext into a Verifier: every
// byte is counted and arrives in order, including a last short view.
func TestDrainLoops(t *testing.T) {
	s := stream(3*Period + 100)
	var v Verifier
	n, err := DrainRead(bytes.NewReader(s), make([]byte, 65536), &v)
	if err != nil || n != int64(len(s)) || v.Err() != nil || v.Len() != n {
		t.Fatalf("DrainRead: %d bytes, %v; verifier %d bytes, %v", n, err, v.Len(), v.Err())
	}
	v = Verifier{}
	n, err = DrainNext(&nexter{s}, 1<<20, &v)
	if err != nil || n != int64(len(s)) || v.Err() != nil || v.Len() != n {
		t.Fatalf("DrainNext: %d bytes, %v; verifier %d bytes, %v", n, err, v.Len(), v.Err())
	}
}

// TestSink runs the sink process and sends it an intact stream and a damaged one: it
// reports the byte counts, and the changed bytes of the second.
func TestSink(t *testing.T) {
	sink, err := StartSink(true)
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	for _, damage := range []int{-1, 5000} {
		s := stream(Period + 999)
		if damage >= 0 {
			s[damage]++
		}
		c, err := net.Dial("tcp", sink.Addr)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := c.Write(s); err != nil {
			t.Fatal(err)
		}
		c.Close()
		n, bad, err := sink.Result()
		wantBad := int64(0)
		if damage >= 0 {
			wantBad = 1
		}
		if err != nil || n != int64(len(s)) || bad != wantBad {
			t.Fatalf("damage at %d: sink got %d bytes, %d bad, %v; want %d, %d", damage, n, bad, err, len(s), wantBad)
		}
	}
}
