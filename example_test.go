package zcnet_test

import (
	"bufio"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	"github.com/zcnet/zcnet"
)

// peer is the other end of the examples' conns, a client: it dials addr, sends with send
// and closes the conn.
func peer(addr string, send func(c net.Conn) error) {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		log.Print(err)
		return
	}
	defer c.Close()
	if err := send(c); err != nil {
		log.Print(err)
	}
}

// A net/http server on zcnet.Listen: the only change from a plain server is the listener.
func ExampleListen() {
	ln, err := zcnet.Listen("tcp", "127.0.0.1:0") // was: net.Listen("tcp", ...)
	if err != nil {
		log.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello, %s", r.URL.Query().Get("name"))
	})}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	resp, err := http.Get("http://" + ln.Addr().String() + "/?name=gopher")
	if err != nil {
		log.Fatal(err)
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(resp.Status)
	fmt.Println(string(body))

	http.DefaultClient.CloseIdleConnections()
	srv.Close()
	fmt.Println(<-served)
	// Output:
	// 200 OK
	// hello, gopher
	// http: Server closed
}

// Length-prefixed messages read with Next: each view is used before the next call on the
// conn, which is as long as it is valid.
func ExampleConn_Next() {
	ln, err := zcnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	// The peer sends three messages, each a 4-byte big-endian length and a body.
	go peer(ln.Addr().String(), func(c net.Conn) error {
		for _, m := range []string{"first", "second message", strings.Repeat("x", 100000)} {
			msg := binary.BigEndian.AppendUint32(nil, uint32(len(m)))
			if _, err := c.Write(append(msg, m...)); err != nil {
				return err
			}
		}
		return nil
	})

	nc, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	c := nc.(*zcnet.Conn)
	defer c.Close()
	for {
		hdr, err := c.Next(4)
		if err == io.EOF {
			break // the peer closed between messages
		}
		if err != nil {
			log.Fatal(err)
		}
		n := int(binary.BigEndian.Uint32(hdr)) // hdr is valid until the next call on c
		body, err := c.Next(n)
		if err != nil {
			log.Fatal(err)
		}
		// body may point into read-only mapped pages: read it, copy it, never write to it.
		fmt.Printf("%d bytes, sha256 %x\n", len(body), sha256.Sum256(body))
	}
	// Output:
	// 5 bytes, sha256 a7937b64b8caa58f03721bb6bacf5c78cb235febe0e70b1b84cd99541461a08e
	// 14 bytes, sha256 2bbc8b6b338a7c9ec0bb623ed2325fc886af21c4519b2e8bf737a139f11bd7ce
	// 100000 bytes, sha256 d69e68988157833272305aaf21f453c800346e8a3640db6578e260215542e5d4
}

// io.Copy from a Conn calls its WriteTo, which hands the writer the mapped pages
// themselves where the conn maps: here a hash reads the stream without a copy in user
// space.
func ExampleConn_WriteTo() {
	ln, err := zcnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	// The peer sends 4 MiB.
	go peer(ln.Addr().String(), func(c net.Conn) error {
		block := make([]byte, 64<<10)
		for i := range block {
			block[i] = byte(i * 7)
		}
		for range 64 {
			if _, err := c.Write(block); err != nil {
				return err
			}
		}
		return nil
	})

	c, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	defer c.Close()
	h := sha256.New()
	n, err := io.Copy(h, c) // c.(*zcnet.Conn).WriteTo(h)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%d bytes, sha256 %x\n", n, h.Sum(nil))
	// Output:
	// 4194304 bytes, sha256 ff9c64d110122d6b3eca7bc9a2c2c9a3685aeb0164b36800ed5bc1e4381e004f
}

// A listener's Stats sum the counters of the conns it accepted, open or closed; Expvar
// (or Publish) serves them on /debug/vars. How many bytes were mapped depends on the host
// and the peer; how many were received does not.
func ExampleListener_Stats() {
	ln, err := zcnet.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer ln.Close()

	go peer(ln.Addr().String(), func(c net.Conn) error {
		_, err := c.Write(make([]byte, 12345))
		return err
	})
	c, err := ln.Accept()
	if err != nil {
		log.Fatal(err)
	}
	if _, err := io.Copy(io.Discard, c); err != nil {
		log.Fatal(err)
	}
	c.Close()

	st := ln.Stats()
	fmt.Println("received:", st.MappedBytes+st.CopiedBytes)

	// The same counters as expvar publishes them (ln.Publish("name") puts them there).
	var pub zcnet.Stats
	if err := json.Unmarshal([]byte(ln.Expvar().String()), &pub); err != nil {
		log.Fatal(err)
	}
	fmt.Println("published:", pub.MappedBytes+pub.CopiedBytes)
	// Output:
	// received: 12345
	// published: 12345
}

// A client: Dialer.DialContext in place of net.Dialer's in an http.Transport. The
// transport's conns are *zcnet.Conn, and the Dialer's Stats sum what they received.
func ExampleDialer() {
	// Any HTTP server: here one on net.Listen that sends 1 MiB.
	body := strings.Repeat("zcnet ", 1<<20/6)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, body)
	}))
	defer srv.Close()

	d := &zcnet.Dialer{}
	tr := &http.Transport{DialContext: d.DialContext} // was: (&net.Dialer{}).DialContext
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}

	resp, err := client.Get(srv.URL)
	if err != nil {
		log.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, resp.Body)
	resp.Body.Close()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Printf("%s, %d bytes, sha256 %x\n", resp.Status, n, h.Sum(nil))

	// The body and the response's header, as the conn received them.
	st := d.Stats()
	fmt.Println("the dialer's conns received the body:", st.MappedBytes+st.CopiedBytes > uint64(n))
	// Output:
	// 200 OK, 1048572 bytes, sha256 dc2cf8191ced58bd4db908a44916772cac845a5b28668a8589515f4ec2af0cf0
	// the dialer's conns received the body: true
}

// A database driver's dial hook has the shape of net.Dialer.DialContext (pgx's
// Config.DialFunc, go-redis's Options.Dialer, ...): Dialer.DialContext fits as it is.
// TCP conns are *zcnet.Conn; a configuration that names a unix socket gets net.Dialer's
// conn, unchanged.
func ExampleDialer_DialContext() {
	// A stand-in for a database server, answering "PONG" to "PING", on TCP and on a
	// unix socket.
	serve := func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				line, err := bufio.NewReader(c).ReadString('\n')
				if err == nil && line == "PING\n" {
					io.WriteString(c, "PONG\n")
				}
			}()
		}
	}
	tcpLn, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		log.Fatal(err)
	}
	defer tcpLn.Close()
	go serve(tcpLn)
	dir, err := os.MkdirTemp("", "zcnet-example")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	sock := filepath.Join(dir, "db.sock")
	unixLn, err := net.Listen("unix", sock)
	if err != nil {
		log.Fatal(err)
	}
	defer unixLn.Close()
	go serve(unixLn)

	// What a driver is given and calls for each new conn of its pool.
	d := &zcnet.Dialer{}
	var dialFunc func(ctx context.Context, network, addr string) (net.Conn, error) = d.DialContext

	for _, target := range [][2]string{{"tcp", tcpLn.Addr().String()}, {"unix", sock}} {
		c, err := dialFunc(context.Background(), target[0], target[1])
		if err != nil {
			log.Fatal(err)
		}
		if _, err := io.WriteString(c, "PING\n"); err != nil {
			log.Fatal(err)
		}
		reply, err := bufio.NewReader(c).ReadString('\n')
		c.Close()
		if err != nil {
			log.Fatal(err)
		}
		fmt.Printf("%s: %T, %q\n", target[0], c, reply)
	}
	// Output:
	// tcp: *zcnet.Conn, "PONG\n"
	// unix: *net.UnixConn, "PONG\n"
}
