// Command demoupstream is a small upstream for trying mosnlite by hand: `make run` starts it
// behind configs/mosnlite.json.
//
//	demoupstream [-listen 127.0.0.1:8080] [-mode http|tcp-echo|udp-echo] [-name NAME]
//
// In http mode, `/` answers with a short text naming this server and the request it got, and
// `/echo` sends the request body back. tcp-echo and udp-echo echo bytes and datagrams, for
// manual runs of tcp_proxy and udp_proxy. SIGTERM or SIGINT stops it gracefully: it stops
// accepting, lets open exchanges finish for up to -grace, then closes what is left.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stderr, nil); err != nil {
		fmt.Fprintf(os.Stderr, "demoupstream: %v\n", err)
		os.Exit(1)
	}
}

// maxEchoBody bounds what /echo reads, so a runaway client cannot fill memory.
const maxEchoBody = 16 << 20

type options struct {
	listen string
	mode   string
	name   string
	grace  time.Duration
}

// run serves until ctx is done. ready, when not nil, receives the bound address once the
// socket is open (tests listen on port 0).
func run(ctx context.Context, args []string, stderr io.Writer, ready chan<- net.Addr) error {
	fs := flag.NewFlagSet("demoupstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var o options
	fs.StringVar(&o.listen, "listen", "127.0.0.1:8080", "address to listen on")
	fs.StringVar(&o.mode, "mode", "http", "http, tcp-echo or udp-echo")
	fs.StringVar(&o.name, "name", "demoupstream", "name this server reports in its answers")
	fs.DurationVar(&o.grace, "grace", 5*time.Second, "how long open exchanges may finish after SIGTERM")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	switch o.mode {
	case "http", "tcp-echo":
		ln, err := net.Listen("tcp", o.listen)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "demoupstream: %s on %s\n", o.mode, ln.Addr())
		if ready != nil {
			ready <- ln.Addr()
		}
		if o.mode == "http" {
			return serveHTTP(ctx, ln, o)
		}
		return serveTCPEcho(ctx, ln, o.grace)
	case "udp-echo":
		pc, err := net.ListenPacket("udp", o.listen)
		if err != nil {
			return err
		}
		fmt.Fprintf(stderr, "demoupstream: %s on %s\n", o.mode, pc.LocalAddr())
		if ready != nil {
			ready <- pc.LocalAddr()
		}
		return serveUDPEcho(ctx, pc)
	}
	return fmt.Errorf("-mode %q: unknown (known: http, tcp-echo, udp-echo)", o.mode)
}

// newHandler answers `/` with who it is and what it got, and `/echo` with the request body.
func newHandler(name, addr string) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "Hello from %s (%s)\nrequest: %s %s %s host=%q from=%s\n",
			name, addr, r.Method, r.URL.RequestURI(), r.Proto, r.Host, r.RemoteAddr)
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxEchoBody))
		if err != nil {
			http.Error(w, err.Error(), http.StatusRequestEntityTooLarge)
			return
		}
		ct := r.Header.Get("Content-Type")
		if ct == "" {
			ct = "application/octet-stream"
		}
		w.Header().Set("Content-Type", ct)
		_, _ = w.Write(body)
	})
	return mux
}

func serveHTTP(ctx context.Context, ln net.Listener, o options) error {
	srv := &http.Server{
		Handler:           newHandler(o.name, ln.Addr().String()),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), o.grace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if errors.Is(err, context.DeadlineExceeded) {
		err = srv.Close()
	}
	if serr := <-errc; !errors.Is(serr, http.ErrServerClosed) && err == nil {
		err = serr
	}
	return err
}

// serveTCPEcho echoes every accepted connection until the peer closes it. When ctx ends it
// stops accepting, waits up to grace for open connections, then closes them.
func serveTCPEcho(ctx context.Context, ln net.Listener, grace time.Duration) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		ln.Close()
	}()
	var (
		mu    sync.Mutex
		conns = map[net.Conn]struct{}{}
		wg    sync.WaitGroup
		err   error
	)
	for {
		c, aerr := ln.Accept()
		if aerr != nil {
			if ctx.Err() == nil {
				err = aerr
			}
			break
		}
		mu.Lock()
		conns[c] = struct{}{}
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _ = io.Copy(c, c)
			c.Close()
			mu.Lock()
			delete(conns, c)
			mu.Unlock()
		}()
	}
	cancel()
	<-stopped
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(grace):
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		<-done
	}
	return err
}

// serveUDPEcho sends every datagram back to its sender until ctx ends.
func serveUDPEcho(ctx context.Context, pc net.PacketConn) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		<-ctx.Done()
		pc.Close()
	}()
	defer func() { cancel(); <-stopped }()
	buf := make([]byte, 64<<10)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		// A failed send (peer gone, buffer full) loses that datagram only, as UDP does.
		_, _ = pc.WriteTo(buf[:n], from)
	}
}
