//go:build linux

package thirdparty

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"

	"github.com/zcnet/zcnet"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// rawCodec marshals *[]byte as its bytes: a gRPC service with no protobuf code.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	p, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return *p, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	p, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	*p = append((*p)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "zcnet-raw" }

func init() { encoding.RegisterCodec(rawCodec{}) }

// uploadService is a client-streaming gRPC service: Upload hashes every message it
// receives and answers "bytes sha256".
var uploadService = grpc.ServiceDesc{
	ServiceName: "zcnet.test.Upload",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Upload",
		ClientStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
			h := sha256.New()
			var n int64
			var msg []byte
			for {
				err := stream.RecvMsg(&msg)
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
				h.Write(msg)
				n += int64(len(msg))
			}
			reply := []byte(hashReply(n, h.Sum(nil)))
			return stream.SendMsg(&reply)
		},
	}},
}

// connListener passes on the *Conn of every accept, to look at the server's sockets.
type connListener struct {
	*zcnet.Listener
	conns chan *zcnet.Conn
}

func (l connListener) Accept() (net.Conn, error) {
	c, err := l.AcceptConn()
	if err != nil {
		return nil, err
	}
	select {
	case l.conns <- c:
	default:
	}
	return c, nil
}

// TestServerGRPCUpload serves grpc-go on a zcnet listener with Options.UserTimeout and
// streams 256 MiB (64 MiB under the race detector) to it in 1 MiB messages, from a gRPC client that dials through a zcnet
// Dialer (grpc.WithContextDialer): the service receives the stream intact (SHA-256). The
// server's socket has TCP_USER_TIMEOUT = Options.UserTimeout: gRPC sets its own default
// (20 s) only on a *net.TCPConn and leaves a *Conn alone, so the option is the way to
// have one.
func TestServerGRPCUpload(t *testing.T) {
	const msgSize = 1 << 20
	total := 256 << 20
	if raceEnabled {
		total = 64 << 20 // the race detector slows gRPC's framing ~4x
	}
	const userTimeout = 7 * time.Second
	lc := zcnet.ListenConfig{Options: zcnet.Options{UserTimeout: userTimeout}}
	zl, err := lc.Listen(context.Background(), "tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln := connListener{zl, make(chan *zcnet.Conn, 1)}
	srv := grpc.NewServer()
	srv.RegisterService(&uploadService, struct{}{})
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() {
		srv.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	}()

	d := &zcnet.Dialer{}
	cc, err := grpc.NewClient("passthrough:///"+zl.Addr().String(),
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		}))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	stream, err := cc.NewStream(ctx, &uploadService.Streams[0], "/zcnet.test.Upload/Upload",
		grpc.CallContentSubtype(rawCodec{}.Name()))
	if err != nil {
		t.Fatal(err)
	}
	pat := zcsend.PatternBytes()
	for sent := 0; sent < total; sent += msgSize {
		msg := pat[sent%len(pat):][:msgSize]
		if err := stream.SendMsg(&msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var reply []byte
	if err := stream.RecvMsg(&reply); err != nil {
		t.Fatal(err)
	}
	wantReply(t, string(reply), int64(total))

	sc := <-ln.conns
	if v := sockoptInt(t, sc, unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT); v != int(userTimeout/time.Millisecond) {
		t.Errorf("server conn TCP_USER_TIMEOUT %d ms, want %d", v, userTimeout/time.Millisecond)
	}
	if s := zl.Stats(); s.MappedBytes+s.CopiedBytes < uint64(total) {
		t.Errorf("listener Stats count %d bytes, want at least %d", s.MappedBytes+s.CopiedBytes, total)
	}
}

// sockoptInt reads an integer socket option through c's SyscallConn.
func sockoptInt(t testing.TB, c syscall.Conn, level, opt int) int {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var v int
	var serr error
	if err := rc.Control(func(fd uintptr) { v, serr = unix.GetsockoptInt(int(fd), level, opt) }); err != nil {
		t.Fatal(err)
	}
	if serr != nil {
		t.Fatal(serr)
	}
	return v
}
