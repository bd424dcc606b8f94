package server

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// admin is the small operations endpoint: metrics, readiness, liveness and the log level.
// Mutations take POST/PUT only. It binds where the config says (MOSN's admin block).
type admin struct {
	ln  net.Listener
	srv *http.Server
}

func newAdmin(addr string, s *Server, level zap.AtomicLevel) (*admin, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.metrics.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /ready", func(w http.ResponseWriter, _ *http.Request) {
		if !s.Ready() {
			http.Error(w, "not ready\n", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ready\n"))
	})
	// Re-read the config source and reload it, all or nothing (as SIGHUP does). Only POST:
	// the mux answers other methods with 405.
	mux.HandleFunc("POST /api/v1/reload", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		err := s.ReloadFromSource()
		if err == nil {
			w.Write([]byte(`{"status":"ok"}` + "\n"))
			return
		}
		body := struct {
			Status   string   `json:"status"`
			Error    string   `json:"error"`
			Problems []string `json:"problems,omitempty"`
		}{Status: "error", Error: err.Error()}
		var ps config.Problems
		if errors.As(err, &ps) {
			for _, p := range ps {
				body.Problems = append(body.Problems, p.Error())
			}
		}
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(body)
	})
	// Start the graceful shutdown SIGTERM starts (Server.Drain); the answer says what
	// follows. Only POST.
	mux.HandleFunc("POST /api/v1/drain", func(w http.ResponseWriter, _ *http.Request) {
		s.mu.Lock()
		delay, timeout := s.drain.Delay.D(), s.drainTimeout()
		s.mu.Unlock()
		s.Drain()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusAccepted)
		json.NewEncoder(w).Encode(struct {
			Status  string `json:"status"`
			Delay   string `json:"delay"`
			Timeout string `json:"timeout"`
		}{"draining", delay.String(), timeout.String()})
	})
	// Profiling, as Envoy's and MOSN's admin offer it; admin binds loopback by default.
	mux.HandleFunc("GET /debug/pprof/", pprof.Index)
	mux.HandleFunc("GET /debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("GET /debug/pprof/trace", pprof.Trace)
	mux.HandleFunc("GET /debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("GET /live", func(w http.ResponseWriter, _ *http.Request) { w.Write([]byte("live\n")) })
	if level != (zap.AtomicLevel{}) {
		// zap.AtomicLevel serves GET (read) and PUT (change) of {"level":"debug"}.
		mux.Handle("GET /logging", level)
		mux.Handle("PUT /logging", level)
		mux.Handle("GET /api/v1/get_loglevel", level)
	}
	return &admin{ln: ln, srv: &http.Server{
		Handler:           mux,
		ReadHeaderTimeout: 5 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          zap.NewStdLog(s.log.Named("admin")),
	}}, nil
}

func (a *admin) run(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- a.srv.Serve(a.ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	a.srv.Shutdown(sctx)
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}
