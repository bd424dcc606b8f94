package proxy

import (
	"time"

	"github.com/mosnlite/mosnlite/pkg/filter"
)

// SetSniffTimeout shortens an Auto filter's wait for the first bytes.
func SetSniffTimeout(f filter.NetworkFilter, d time.Duration) { f.(*auto).sniffTimeout = d }
