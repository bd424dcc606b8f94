package dubbo

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"

	"github.com/go-chi/chi/v5"
	"go.uber.org/zap"
)

// Response is every answer's body (MOSN's): err_no 0 on success, 1 on failure.
type Response struct {
	ErrNo  int    `json:"err_no"`
	ErrMsg string `json:"err_msg"`
}

// Request is the body of every call (MOSN's field names). Registry may be left out: the
// embedded registry serves then.
type Request struct {
	Registry struct {
		Type     string `json:"type"` // "zookeeper" or "local"; empty: zookeeper when addr is set, else local
		Addr     string `json:"addr"` // host:port[,host:port...]
		UserName string `json:"username,omitempty"`
		Password string `json:"password,omitempty"`
	} `json:"registry"`
	Service struct {
		Interface string          `json:"interface"`
		Methods   []string        `json:"methods"`
		Group     string          `json:"group,omitempty"`
		Version   string          `json:"version,omitempty"`
		Port      json.RawMessage `json:"port,omitempty"` // MOSN's request carries it; unused there and here
	} `json:"service"`
}

// maxBody bounds a request body.
const maxBody = 64 << 10

// Handler routes POST /pub /unpub /sub /unsub.
func (s *Service) Handler() http.Handler {
	r := chi.NewRouter()
	r.Post("/pub", s.handle("pub", "publish", s.doPub))
	r.Post("/unpub", s.handle("unpub", "unpub", s.doUnpub))
	r.Post("/sub", s.handle("sub", "subscribe", s.doSub))
	r.Post("/unsub", s.handle("unsub", "unsubscribe", s.doUnsub))
	return r
}

type op func(*Request) error

// handle decodes the body, runs the operation (counted as opName) and answers MOSN's way: "<name> success", or
// err_no 1 with "<name> fail, err: <what is wrong>". A body that is not JSON is a 400.
func (s *Service) handle(opName, name string, do op) http.HandlerFunc {
	ok, failed := s.met.RegistryRequests.WithLabelValues(opName, "success"), s.met.RegistryRequests.WithLabelValues(opName, "failure")
	return func(w http.ResponseWriter, r *http.Request) {
		req, status, err := decode(w, r)
		if err == nil {
			err = do(req)
		}
		if err != nil {
			failed.Inc()
			s.log.Info("dubbo registry: request failed", zap.String("path", r.URL.Path), zap.Error(err))
			answer(w, status, Response{ErrNo: 1, ErrMsg: name + " fail, err: " + err.Error()})
			return
		}
		ok.Inc()
		answer(w, http.StatusOK, Response{ErrNo: 0, ErrMsg: name + " success"})
	}
}

func answer(w http.ResponseWriter, status int, r Response) {
	b, _ := json.Marshal(r)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// decode reads the body: syntax errors and oversized bodies are 400s; a JSON body of the
// wrong shape is a 200 with err_no 1 (MOSN answers every failure with 200).
func decode(w http.ResponseWriter, r *http.Request) (*Request, int, error) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, http.StatusBadRequest, fmt.Errorf("body is larger than %d bytes", maxBody)
		}
		return nil, http.StatusBadRequest, fmt.Errorf("reading the body: %w", err)
	}
	if len(strings.TrimSpace(string(body))) == 0 {
		return nil, http.StatusBadRequest, errors.New("empty body; want a JSON object with registry and service")
	}
	var req Request
	if err := json.Unmarshal(body, &req); err != nil {
		var syn *json.SyntaxError
		var typ *json.UnmarshalTypeError
		switch {
		case errors.As(err, &syn):
			return nil, http.StatusBadRequest, fmt.Errorf("body is not JSON: %v (at byte %d)", syn, syn.Offset)
		case errors.As(err, &typ) && typ.Field == "":
			return nil, http.StatusBadRequest, fmt.Errorf("body is not a JSON object: have a %s", typ.Value)
		case errors.As(err, &typ):
			return nil, http.StatusOK, fmt.Errorf("%s: want %s, have %s", typ.Field, jsonKind(typ.Type.Kind().String()), typ.Value)
		default:
			return nil, http.StatusBadRequest, fmt.Errorf("body is not JSON: %v", err)
		}
	}
	return &req, http.StatusOK, nil
}

func jsonKind(goKind string) string {
	switch goKind {
	case "slice":
		return "a list"
	case "struct":
		return "an object"
	case "string":
		return "a string"
	}
	return goKind
}

func (s *Service) doPub(req *Request) error {
	ref, sel, methods, err := checkRequest(req, true, false)
	if err != nil {
		return err
	}
	return s.publish(ref, sel, methods)
}

func (s *Service) doUnpub(req *Request) error {
	ref, sel, _, err := checkRequest(req, false, false)
	if err != nil {
		return err
	}
	return s.unpublish(ref, sel)
}

func (s *Service) doSub(req *Request) error {
	ref, sel, methods, err := checkRequest(req, true, true)
	if err != nil {
		return err
	}
	return s.subscribe(ref, sel, methods)
}

func (s *Service) doUnsub(req *Request) error {
	ref, sel, _, err := checkRequest(req, false, true)
	if err != nil {
		return err
	}
	return s.unsubscribe(ref, sel)
}

// RegistryTypes are the registry.type values known.
var RegistryTypes = []string{"zookeeper", "local"}

// checkRequest validates a request; the error names the first bad field. needMethods: the
// call writes a URL that lists them. consumer: group and version may be "*" and the group a
// comma list.
func checkRequest(req *Request, needMethods, consumer bool) (registryRef, Selector, string, error) {
	var ref registryRef
	reg := req.Registry
	switch reg.Type {
	case "":
		ref.kind = "local"
		if reg.Addr != "" {
			ref.kind = "zookeeper"
		}
	case "zookeeper", "local":
		ref.kind = reg.Type
	default:
		return ref, Selector{}, "", fmt.Errorf("registry.type: unknown %q (known: %s)", reg.Type, strings.Join(RegistryTypes, ", "))
	}
	switch {
	case ref.kind == "local" && reg.Addr != "":
		return ref, Selector{}, "", fmt.Errorf("registry.addr: the local registry takes no address, have %q", reg.Addr)
	case ref.kind == "zookeeper" && reg.Addr == "":
		return ref, Selector{}, "", errors.New("registry.addr: missing (zookeeper needs host:port)")
	case ref.kind == "zookeeper":
		addrs := strings.Split(reg.Addr, ",")
		for _, a := range addrs {
			h, p, err := net.SplitHostPort(a)
			n, perr := strconv.Atoi(p)
			if err != nil || h == "" || perr != nil || n < 1 || n > 65535 {
				return ref, Selector{}, "", fmt.Errorf("registry.addr: %q is not host:port", a)
			}
		}
		ref.addr = strings.Join(addrs, ",")
	}

	svc := req.Service
	sel := Selector{Interface: svc.Interface, Group: svc.Group, Version: svc.Version}
	if svc.Interface == "" {
		return ref, sel, "", errors.New("service.interface: missing (the Dubbo interface, such as com.example.DemoService)")
	}
	if !isName(svc.Interface, ".-$") || len(svc.Interface) > 512 {
		return ref, sel, "", fmt.Errorf("service.interface: %q is not an interface name (letters, digits, . _ $ -; at most 512)", svc.Interface)
	}
	if err := checkToken("service.group", svc.Group); err != nil {
		return ref, sel, "", err
	}
	if err := checkToken("service.version", svc.Version); err != nil {
		return ref, sel, "", err
	}
	if !consumer {
		if svc.Group == "*" || strings.Contains(svc.Group, ",") {
			return ref, sel, "", fmt.Errorf("service.group: a provider has one group, have %q", svc.Group)
		}
		if svc.Version == "*" {
			return ref, sel, "", errors.New(`service.version: a provider has one version, have "*"`)
		}
	} else if strings.Contains(svc.Group, ",") && slices.Contains(strings.Split(svc.Group, ","), "") {
		return ref, sel, "", fmt.Errorf("service.group: %q has an empty member", svc.Group)
	}
	if svc.Version != "" && strings.Contains(svc.Version, ",") {
		return ref, sel, "", fmt.Errorf("service.version: one version, have %q", svc.Version)
	}
	if needMethods && len(svc.Methods) == 0 {
		return ref, sel, "", errors.New("service.methods: missing (the list of the interface's methods)")
	}
	ms := slices.Clone(svc.Methods)
	for i, m := range ms {
		if m == "" || !isName(m, "$") || m[0] >= '0' && m[0] <= '9' || len(m) > 256 {
			return ref, sel, "", fmt.Errorf("service.methods[%d]: %q is not a method name", i, m)
		}
	}
	slices.Sort(ms)
	return ref, sel, strings.Join(slices.Compact(ms), ","), nil
}

// isName reports whether s is letters, digits, '_' and the extra characters.
func isName(s, extra string) bool {
	for _, c := range s {
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		case strings.ContainsRune(extra, c):
		default:
			return false
		}
	}
	return true
}

// checkToken accepts values that may stand in a URL parameter unescaped: letters, digits
// and . _ - $ * , (empty is fine).
func checkToken(field, v string) error {
	if len(v) > 256 || !isName(v, ".-$*,") {
		return fmt.Errorf("%s: %q may hold only letters, digits and . _ - $ * , (at most 256)", field, v)
	}
	return nil
}
