package zcsend

import (
	"bytes"
	"fmt"
	"io"
)

// Verifier is an io.Writer that checks the bytes written to it against the pattern, as
// the stream from offset 0. Its zero value is ready to use.
type Verifier struct {
	off, bad, firstBad int64
}

// Write compares p with the pattern at the current offset; it never fails, so that a
// writer fed by io.Copy sees the whole stream. Err reports the outcome.
func (v *Verifier) Write(p []byte) (int, error) {
	pat := patternBuf
	n := len(p)
	for len(p) > 0 {
		o := int(v.off % Period)
		k := min(len(p), Period-o)
		if !bytes.Equal(p[:k], pat[o:o+k]) {
			for i := range k {
				if p[i] != pat[o+i] {
					if v.bad == 0 {
						v.firstBad = v.off + int64(i)
					}
					v.bad++
				}
			}
		}
		v.off += int64(k)
		p = p[k:]
	}
	return n, nil
}

// Len returns the number of bytes checked so far.
func (v *Verifier) Len() int64 { return v.off }

// Err returns nil if every byte checked so far matched the pattern, or an error naming how
// many did not and the offset of the first.
func (v *Verifier) Err() error {
	if v.bad == 0 {
		return nil
	}
	return fmt.Errorf("zcsend: %d of %d bytes differ from the pattern (first at offset %d)", v.bad, v.off, v.firstBad)
}

// DrainRead reads r to its end (io.EOF) with Read into buf, and writes what it read to w
// unless w is nil. It returns the bytes read and the first error other than io.EOF.
func DrainRead(r io.Reader, buf []byte, w io.Writer) (int64, error) {
	var total int64
	for {
		n, err := r.Read(buf)
		total += int64(n)
		if w != nil && n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return total, werr
			}
		}
		if err == io.EOF {
			return total, nil
		}
		if err != nil {
			return total, err
		}
	}
}

// Nexter is the Next method of a *zcnet.Conn.
type Nexter interface {
	Next(n int) ([]byte, error)
}

// DrainNext consumes c to its end with Next(n), and writes each view to w unless w is nil.
// It returns the bytes consumed and the first error other than the end of the stream
// (io.EOF, or io.ErrUnexpectedEOF for a last view shorter than n).
func DrainNext(c Nexter, n int, w io.Writer) (int64, error) {
	var total int64
	for {
		p, err := c.Next(n)
		total += int64(len(p))
		if w != nil && len(p) > 0 {
			if _, werr := w.Write(p); werr != nil {
				return total, werr
			}
		}
		switch err {
		case nil:
		case io.EOF, io.ErrUnexpectedEOF:
			return total, nil
		default:
			return total, err
		}
	}
}
