package dubbo

import (
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// ExtendType is the extends[].type that enables the registry.
const ExtendType = "dubbo_registry"

// Defaults.
const (
	DefaultAPIPort          = 22222 // MOSN's
	DefaultAPIAddress       = "127.0.0.1"
	DefaultRouterConfigName = "dubbo" // MOSN's dubbo egress router
	DefaultApplication      = "mosnlite"
	DefaultRegistryTimeout  = 5 * time.Second
	DefaultSessionTimeout   = 10 * time.Second
)

// Config is the extends entry's config. The first four fields are MOSN's; the rest are
// mosnlite's.
type Config struct {
	// Enable: MOSN starts the registry only when true; mosnlite also starts it when the
	// field is absent (the extends entry itself asks for it).
	Enable *bool `json:"enable,omitempty"`
	// ServerPort is the sidecar's ingress port that /pub advertises (MOSN's server_port).
	ServerPort int `json:"server_port"`
	// APIPort serves /pub /unpub /sub /unsub (default 22222).
	APIPort int `json:"api_port,omitempty"`
	// LogPath is MOSN's dubbo log directory; mosnlite logs through its own logger.
	LogPath string `json:"log_path,omitempty"`

	// APIAddress is the API's bind address (default 127.0.0.1; MOSN binds every interface).
	APIAddress string `json:"api_address,omitempty"`
	// ServerIP is the address /pub advertises and consumers register with (default: the
	// first non-loopback IPv4 address of the machine, as MOSN picks it).
	ServerIP string `json:"server_ip,omitempty"`
	// RouterConfigName is the router the egress listener uses; /sub adds its routes there
	// (default "dubbo"; created with a "*" virtual host when no config defines it).
	RouterConfigName string `json:"router_config_name,omitempty"`
	// Application is the "application" parameter of the URLs written (default "mosnlite").
	Application string `json:"application,omitempty"`
	// RegistryTimeout bounds connecting to a registry on first use (default 5s).
	RegistryTimeout *config.Duration `json:"registry_timeout,omitempty"`
	// SessionTimeout is the ZooKeeper session timeout asked for (default 10s).
	SessionTimeout *config.Duration `json:"session_timeout,omitempty"`
}

// Parse checks the inside of the entry's config (unknown keys, JSON types) with its path.
func init() { config.RegisterExtendConfig(ExtendType, Config{}) }

// ParseConfig decodes and checks an extends entry's config, filling defaults. Errors name
// the field.
func ParseConfig(raw config.RawMessage) (Config, error) {
	var c Config
	if len(raw) > 0 {
		if err := config.Unmarshal(raw, &c); err != nil {
			return c, err
		}
	}
	if c.ServerPort < 1 || c.ServerPort > 65535 {
		if c.ServerPort == 0 {
			return c, errors.New("server_port: missing (the sidecar's ingress port that /pub advertises)")
		}
		return c, fmt.Errorf("server_port: %d is not a port (1-65535)", c.ServerPort)
	}
	if c.APIPort == 0 {
		c.APIPort = DefaultAPIPort
	}
	if c.APIPort < 0 || c.APIPort > 65535 {
		return c, fmt.Errorf("api_port: %d is not a port (1-65535)", c.APIPort)
	}
	if c.APIAddress == "" {
		c.APIAddress = DefaultAPIAddress
	}
	if net.ParseIP(c.APIAddress) == nil {
		return c, fmt.Errorf("api_address: %q is not an IP address", c.APIAddress)
	}
	if c.ServerIP == "" {
		c.ServerIP = LocalIP()
	}
	if ip := net.ParseIP(c.ServerIP); ip == nil || ip.IsUnspecified() {
		return c, fmt.Errorf("server_ip: %q is not an IP address a peer can reach", c.ServerIP)
	}
	if c.RouterConfigName == "" {
		c.RouterConfigName = DefaultRouterConfigName
	}
	if c.Application == "" {
		c.Application = DefaultApplication
	}
	if err := checkToken("application", c.Application); err != nil {
		return c, err
	}
	for _, d := range []struct {
		name string
		v    *config.Duration
	}{{"registry_timeout", c.RegistryTimeout}, {"session_timeout", c.SessionTimeout}} {
		if d.v != nil && d.v.D() <= 0 {
			return c, fmt.Errorf("%s: must be positive, have %s", d.name, d.v)
		}
	}
	return c, nil
}

// Enabled reports whether the registry should run.
func (c *Config) Enabled() bool { return c.Enable == nil || *c.Enable }

// LocalIP is the first non-loopback IPv4 address of the machine's interfaces, or
// 127.0.0.1 when there is none.
func LocalIP() string {
	addrs, err := net.InterfaceAddrs()
	if err == nil {
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
				return n.IP.String()
			}
		}
	}
	return "127.0.0.1"
}
