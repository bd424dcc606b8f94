package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/mosnlite/mosnlite/test/framework"
)

// rawCodec carries messages as raw bytes, so the test service needs no protoc output.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	b, ok := v.(*[]byte)
	if !ok {
		return nil, fmt.Errorf("rawCodec: %T", v)
	}
	return *b, nil
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	b, ok := v.(*[]byte)
	if !ok {
		return fmt.Errorf("rawCodec: %T", v)
	}
	*b = append((*b)[:0], data...)
	return nil
}

func (rawCodec) Name() string { return "raw" }

// echoService is a handwritten gRPC service: Unary, Collect (client stream), Count
// (server stream) and Chat (bidi).
type echoService struct{}

type echoServer interface{}

func unaryHandler(_ any, ctx context.Context, dec func(any) error, _ grpc.UnaryServerInterceptor) (any, error) {
	var in []byte
	if err := dec(&in); err != nil {
		return nil, err
	}
	if strings.HasPrefix(string(in), "fail") {
		grpc.SetTrailer(ctx, metadata.Pairs("x-why", "asked-to-fail"))
		return nil, status.Error(codes.NotFound, "no such thing: "+string(in))
	}
	md, _ := metadata.FromIncomingContext(ctx)
	grpc.SetHeader(ctx, metadata.Pairs("x-seen-by", "upstream"))
	grpc.SetTrailer(ctx, metadata.Pairs("x-trailer", "t1"))
	out := []byte("echo:" + string(in) + ":" + strings.Join(md.Get("x-client"), ","))
	return &out, nil
}

func collectHandler(_ any, st grpc.ServerStream) error {
	var all []string
	for {
		var in []byte
		if err := st.RecvMsg(&in); err == io.EOF {
			break
		} else if err != nil {
			return err
		}
		all = append(all, string(in))
	}
	out := []byte(strings.Join(all, "+"))
	return st.SendMsg(&out)
}

func countHandler(_ any, st grpc.ServerStream) error {
	var in []byte
	if err := st.RecvMsg(&in); err != nil {
		return err
	}
	for i := range 5 {
		out := []byte(fmt.Sprintf("%s-%d", in, i))
		if err := st.SendMsg(&out); err != nil {
			return err
		}
	}
	st.SetTrailer(metadata.Pairs("x-count", "5"))
	return status.Error(codes.ResourceExhausted, "that is all")
}

func chatHandler(_ any, st grpc.ServerStream) error {
	for {
		var in []byte
		if err := st.RecvMsg(&in); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		out := []byte("re:" + string(in))
		if err := st.SendMsg(&out); err != nil {
			return err
		}
	}
}

var echoDesc = grpc.ServiceDesc{
	ServiceName: "mosnlite.test.Echo",
	HandlerType: (*echoServer)(nil),
	Methods:     []grpc.MethodDesc{{MethodName: "Unary", Handler: unaryHandler}},
	Streams: []grpc.StreamDesc{
		{StreamName: "Collect", Handler: collectHandler, ClientStreams: true},
		{StreamName: "Count", Handler: countHandler, ServerStreams: true},
		{StreamName: "Chat", Handler: chatHandler, ClientStreams: true, ServerStreams: true},
	},
}

// startRawGRPC serves desc (raw-bytes codec) on a loopback port until the test ends and
// returns its address.
func startRawGRPC(t *testing.T, desc *grpc.ServiceDesc) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}))
	srv.RegisterService(desc, echoService{})
	served := make(chan struct{})
	go func() { defer close(served); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Stop(); <-served })
	return ln.Addr().String()
}

// dialRawGRPC is a grpc-go client of addr (h2c, raw-bytes codec), closed when the test ends.
func dialRawGRPC(t *testing.T, addr string) *grpc.ClientConn {
	t.Helper()
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{})))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cc.Close() })
	return cc
}

// TestGRPCThroughProxy: grpc-go client → mosnlite (Http2) → grpc-go server over h2c:
// unary, client, server and bidi streaming, headers, trailers and non-OK statuses.
func TestGRPCThroughProxy(t *testing.T) {
	up := startRawGRPC(t, &echoDesc)
	addr := framework.FreePort(t)
	framework.StartProxy(t, httpProxyConfig(addr, "Http2", "Http2", []any{
		map[string]any{
			"match": map[string]any{"prefix": "/mosnlite.test.Echo/", "headers": []any{map[string]any{"name": "content-type", "value": "application/grpc+raw", "regex": false}}},
			"route": map[string]any{"cluster_name": "up", "timeout": "20s"},
		},
	}, up))
	cc := dialRawGRPC(t, addr)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	// Unary with metadata both ways.
	in := []byte("hi")
	var out []byte
	var hdr, tr metadata.MD
	octx := metadata.AppendToOutgoingContext(ctx, "x-client", "c1")
	if err := cc.Invoke(octx, "/mosnlite.test.Echo/Unary", &in, &out, grpc.Header(&hdr), grpc.Trailer(&tr)); err != nil {
		t.Fatalf("unary: %v", err)
	}
	if string(out) != "echo:hi:c1" || strings.Join(hdr.Get("x-seen-by"), "") != "upstream" || strings.Join(tr.Get("x-trailer"), "") != "t1" {
		t.Fatalf("unary: %q header %v trailer %v", out, hdr, tr)
	}

	// Unary with a non-OK status and a trailer.
	in = []byte("fail-1")
	tr = nil
	err := cc.Invoke(ctx, "/mosnlite.test.Echo/Unary", &in, &out, grpc.Trailer(&tr))
	if st, _ := status.FromError(err); st.Code() != codes.NotFound || st.Message() != "no such thing: fail-1" {
		t.Fatalf("failing unary: %v", err)
	}
	if strings.Join(tr.Get("x-why"), "") != "asked-to-fail" {
		t.Fatalf("failing unary trailer %v", tr)
	}

	// Client streaming.
	cs, err := cc.NewStream(ctx, &echoDesc.Streams[0], "/mosnlite.test.Echo/Collect")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"a", "b", "c"} {
		b := []byte(m)
		if err := cs.SendMsg(&b); err != nil {
			t.Fatal(err)
		}
	}
	if err := cs.CloseSend(); err != nil {
		t.Fatal(err)
	}
	var got []byte
	if err := cs.RecvMsg(&got); err != nil || string(got) != "a+b+c" {
		t.Fatalf("client stream: %q %v", got, err)
	}

	// Server streaming ending in a non-OK status with a trailer.
	ss, err := cc.NewStream(ctx, &echoDesc.Streams[1], "/mosnlite.test.Echo/Count")
	if err != nil {
		t.Fatal(err)
	}
	b := []byte("n")
	if err := ss.SendMsg(&b); err != nil {
		t.Fatal(err)
	}
	ss.CloseSend()
	var msgs []string
	for {
		var m []byte
		err := ss.RecvMsg(&m)
		if err != nil {
			if st, _ := status.FromError(err); st.Code() != codes.ResourceExhausted || st.Message() != "that is all" {
				t.Fatalf("server stream end: %v", err)
			}
			break
		}
		msgs = append(msgs, string(m))
	}
	if strings.Join(msgs, ",") != "n-0,n-1,n-2,n-3,n-4" || strings.Join(ss.Trailer().Get("x-count"), "") != "5" {
		t.Fatalf("server stream: %v trailer %v", msgs, ss.Trailer())
	}

	// Bidi: each message is answered before the next is sent (a proxy that buffers a
	// whole stream would deadlock here).
	bs, err := cc.NewStream(ctx, &echoDesc.Streams[2], "/mosnlite.test.Echo/Chat")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		m := []byte(fmt.Sprint("m", i))
		if err := bs.SendMsg(&m); err != nil {
			t.Fatal(err)
		}
		var r []byte
		if err := bs.RecvMsg(&r); err != nil || string(r) != fmt.Sprint("re:m", i) {
			t.Fatalf("bidi %d: %q %v", i, r, err)
		}
	}
	bs.CloseSend()
	var r []byte
	if err := bs.RecvMsg(&r); !errors.Is(err, io.EOF) {
		t.Fatalf("bidi end: %v", err)
	}

	// No route (content-type mismatch): the proxy's 404 becomes a gRPC Unimplemented.
	err = cc.Invoke(ctx, "/other.Service/Unary", &in, &out)
	if st, _ := status.FromError(err); st.Code() != codes.Unimplemented {
		t.Fatalf("no route: %v", err)
	}
}
