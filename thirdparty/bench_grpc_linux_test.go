//go:build linux

package thirdparty

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/encoding"

	"github.com/zcnet/zcnet"
	"github.com/zcnet/zcnet/internal/cpumeter"
	"github.com/zcnet/zcnet/internal/zcsend"
)

// grpcClientEnv is the environment variable through which this test binary re-executes
// itself as the client of BenchmarkGRPCUpload: "ADDR,TOTAL,MSG". The client streams
// TOTAL pattern bytes in messages of MSG bytes to the upload service at ADDR, checks the
// reply, prints it and exits; an init function runs it before TestMain, so that the
// server's CPU is measured without the client's.
const grpcClientEnv = "ZCNET_GRPC_CLIENT"

func init() {
	v := os.Getenv(grpcClientEnv)
	if v == "" {
		return
	}
	if err := grpcClient(v); err != nil {
		fmt.Fprintln(os.Stderr, "grpc client:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// grpcClient is the client process of BenchmarkGRPCUpload (see grpcClientEnv).
func grpcClient(v string) error {
	f := strings.Split(v, ",")
	if len(f) != 3 {
		return fmt.Errorf("bad %s=%q", grpcClientEnv, v)
	}
	total, err1 := strconv.Atoi(f[1])
	size, err2 := strconv.Atoi(f[2])
	if err1 != nil || err2 != nil || size <= 0 {
		return fmt.Errorf("bad %s=%q", grpcClientEnv, v)
	}
	encoding.RegisterCodec(rawCodec{}) // this runs before the init that registers it
	cc, err := grpc.NewClient("passthrough:///"+f[0], grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	stream, err := cc.NewStream(ctx, &countService.Streams[0], "/zcnet.test.Count/Upload",
		grpc.CallContentSubtype(rawCodec{}.Name()))
	if err != nil {
		return err
	}
	pat := zcsend.PatternBytes()
	msg := make([]byte, size)
	for sent := 0; sent < total; sent += len(msg) {
		msg = msg[:min(size, total-sent)]
		for i := 0; i < len(msg); {
			i += copy(msg[i:], pat[(sent+i)%len(pat):])
		}
		if err := stream.SendMsg(&msg); err != nil {
			return err
		}
	}
	if err := stream.CloseSend(); err != nil {
		return err
	}
	var reply []byte
	if err := stream.RecvMsg(&reply); err != nil {
		return err
	}
	fmt.Println(string(reply))
	return nil
}

// countService is a client-streaming gRPC service that counts the bytes it receives and
// checks the first and last bytes of each message against the pattern, answering the
// count: the server's work is gRPC's and the conn's, not a hash's.
var countService = grpc.ServiceDesc{
	ServiceName: "zcnet.test.Count",
	HandlerType: (*any)(nil),
	Streams: []grpc.StreamDesc{{
		StreamName:    "Upload",
		ClientStreams: true,
		Handler: func(_ any, stream grpc.ServerStream) error {
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
				if len(msg) > 0 && (msg[0] != zcsend.Pattern(n) || msg[len(msg)-1] != zcsend.Pattern(n+int64(len(msg))-1)) {
					return fmt.Errorf("message at %d differs from the pattern", n)
				}
				n += int64(len(msg))
			}
			reply := []byte(strconv.FormatInt(n, 10))
			return stream.SendMsg(&reply)
		},
	}},
}

// BenchmarkGRPCUpload serves a client-streaming gRPC service on net.Listen or on
// zcnet.Listen (ModeAuto) and receives b.N MiB in 4 MiB messages from a client process
// (this test binary re-executed, see grpcClientEnv). It reports the server process's
// CPU time per MiB (getrusage, user+system):
//
//	cd thirdparty && go test -run '^$' -bench GRPCUpload -benchtime 1024x -count 5
func BenchmarkGRPCUpload(b *testing.B) {
	const msg = 4 << 20
	for _, zc := range []bool{false, true} {
		name := map[bool]string{false: "server=net", true: "server=zcnet"}[zc]
		b.Run(name, func(b *testing.B) {
			var ln net.Listener
			var err error
			if zc {
				ln, err = zcnet.Listen("tcp", "127.0.0.1:0")
			} else {
				ln, err = net.Listen("tcp", "127.0.0.1:0")
			}
			if err != nil {
				b.Fatal(err)
			}
			srv := grpc.NewServer(grpc.MaxRecvMsgSize(2 * msg))
			srv.RegisterService(&countService, struct{}{})
			go srv.Serve(ln)
			defer srv.Stop()
			total := b.N << 20
			exe, err := os.Executable()
			if err != nil {
				b.Fatal(err)
			}
			cmd := exec.Command(exe)
			cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s,%d,%d", grpcClientEnv, ln.Addr(), total, msg))
			cmd.Stderr = os.Stderr
			out, err := cmd.StdoutPipe()
			if err != nil {
				b.Fatal(err)
			}
			b.SetBytes(1 << 20)
			b.ResetTimer()
			cpu0 := cpumeter.Process()
			if err := cmd.Start(); err != nil {
				b.Fatal(err)
			}
			line, rerr := bufio.NewReader(out).ReadString('\n')
			werr := cmd.Wait()
			b.StopTimer()
			cpu := cpumeter.Process() - cpu0
			if rerr != nil || werr != nil || strings.TrimSpace(line) != strconv.Itoa(total) {
				b.Fatalf("client: %q, %v, %v; want %d", line, rerr, werr, total)
			}
			b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "srv-cpu-us/MiB")
		})
	}
}
