package zcnet

import (
	"errors"
	"fmt"
	"io"
	"net"
	"testing"
	"time"
)

// reentrantWriter checks the pattern of what WriteTo hands it and, at its first write,
// makes the read-side calls on the conn that net.TCPConn's writer could make, then closes
// the conn at its second write.
type reentrantWriter struct {
	patternWriter
	c      *Conn
	writes int
	errs   []error // what each call made from the writer got wrong
}

func (w *reentrantWriter) Write(p []byte) (int, error) {
	n, err := w.patternWriter.Write(p)
	w.writes++
	switch w.writes {
	case 1:
		calls := []struct {
			name string
			call func() error
		}{
			{"Read", func() error { _, err := w.c.Read(make([]byte, 10)); return err }},
			{"Next", func() error { _, err := w.c.Next(1); return err }},
			{"WriteTo", func() error { _, err := w.c.WriteTo(io.Discard); return err }},
			{"File", func() error {
				f, err := w.c.File()
				if f != nil {
					f.Close()
				}
				return err
			}},
			{"SyscallConn().Read", func() error {
				rc, err := w.c.SyscallConn()
				if err != nil {
					return err
				}
				return rc.Read(func(uintptr) bool { return true })
			}},
		}
		for _, c := range calls {
			err := c.call()
			var oe *net.OpError
			if !errors.Is(err, ErrWriteToActive) || !errors.As(err, &oe) {
				w.errs = append(w.errs, fmt.Errorf("%s from WriteTo's writer: %v, want a *net.OpError wrapping ErrWriteToActive", c.name, err))
			}
		}
	case 2:
		if cerr := w.c.Close(); cerr != nil {
			w.errs = append(w.errs, fmt.Errorf("Close from WriteTo's writer: %v", cerr))
		}
	}
	return n, err
}

// TestWriteToReentry: read-side calls made from inside WriteTo's writer (Read, Next,
// WriteTo, File, SyscallConn's Read) return ErrWriteToActive at once instead of waiting
// for the WriteTo that called the writer, in every mode; a Close from the writer ends
// the WriteTo with net.ErrClosed, shaped as net.TCPConn's WriteTo error; every byte
// written before is the stream's.
func TestWriteToReentry(t *testing.T) {
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		const total = 4 << 20
		sent := sendStream(sc, total, mappable, false)
		w := &reentrantWriter{c: c}
		type result struct {
			n   int64
			err error
		}
		done := make(chan result, 1)
		go func() {
			n, err := c.WriteTo(w)
			done <- result{n, err}
		}()
		var r result
		select {
		case r = <-done:
		case <-time.After(20 * time.Second):
			t.Fatal("WriteTo did not return: a call from its writer deadlocked")
		}
		<-sent // the sender may fail: the conn was closed with bytes unread
		for _, err := range w.errs {
			t.Error(err)
		}
		if w.err != nil {
			t.Fatalf("after %d bytes: %v", w.off, w.err)
		}
		if r.n != w.off {
			t.Fatalf("WriteTo = %d, the writer got %d", r.n, w.off)
		}
		var oe *net.OpError
		if !errors.Is(r.err, net.ErrClosed) || !errors.As(r.err, &oe) || oe.Op != "writeto" {
			t.Fatalf("WriteTo after a Close from its writer: %v, want a *net.OpError writeto wrapping net.ErrClosed", r.err)
		}
		if w.writes > 3 {
			// (The write after Close may be followed by one of the rest of what
			// WriteTo had in hand: the mapped bytes, then the copied ones.)
			t.Fatalf("the writer was called %d times, want at most 3: WriteTo goes on after Close", w.writes)
		}
		// A WriteTo that ended leaves the conn usable for other calls: they see the close.
		if _, err := c.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
			t.Fatalf("Read after: %v", err)
		}
	})
}

// TestWriteToCloseOtherGoroutine: a Close from another goroutine ends a WriteTo that
// waits for bytes, in every mode, with the bytes before it exact.
func TestWriteToCloseOtherGoroutine(t *testing.T) {
	eachPair(t, func(t *testing.T, m Mode, mappable bool, c *Conn, sc *net.TCPConn) {
		const half = 1 << 20
		if err := writeStream(sc, 0, half, mappable); err != nil {
			t.Fatal(err)
		}
		w := &patternWriter{}
		done := make(chan error, 1)
		go func() { _, err := c.WriteTo(w); done <- err }()
		for deadline := time.Now().Add(10 * time.Second); w.done.Load() < half; time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("WriteTo passed on %d of %d bytes", w.done.Load(), half)
			}
		}
		time.Sleep(20 * time.Millisecond) // WriteTo waits for more
		c.Close()
		select {
		case err := <-done:
			var oe *net.OpError
			if !errors.Is(err, net.ErrClosed) || !errors.As(err, &oe) || oe.Op != "writeto" {
				t.Fatalf("WriteTo after Close: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("Close did not end WriteTo")
		}
		if w.err != nil || w.off != half {
			t.Fatalf("the writer got %d bytes, %v", w.off, w.err)
		}
	})
}
