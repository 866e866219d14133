package zcnet

import (
	"encoding/json"
	"expvar"
	"io"
	"net"
	"testing"
)

// TestListenerPublish checks that a Listener's Stats appear in expvar, counting the bytes
// its conns received, and that publishing a taken name is an error, not a panic.
func TestListenerPublish(t *testing.T) {
	ln, err := Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := ln.Publish("zcnet_test_listener"); err != nil {
		t.Fatal(err)
	}
	if err := ln.Publish("zcnet_test_listener"); err == nil {
		t.Fatal("second Publish under the same name succeeded")
	}
	go func() {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			return
		}
		c.Write(make([]byte, 12345))
		c.Close()
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	n, err := io.Copy(io.Discard, c)
	if err != nil || n != 12345 {
		t.Fatalf("received %d, %v", n, err)
	}
	c.Close()
	var st Stats
	if err := json.Unmarshal([]byte(expvar.Get("zcnet_test_listener").String()), &st); err != nil {
		t.Fatal(err)
	}
	if st.MappedBytes+st.CopiedBytes != 12345 {
		t.Fatalf("expvar stats %+v do not count the 12345 bytes received", st)
	}
}
