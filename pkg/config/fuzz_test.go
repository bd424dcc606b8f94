package config_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/mosnlite/mosnlite/pkg/config"
)

// FuzzParse: Parse, ApplyDefaults and Validate never panic; Parse's checks and the decoder
// never disagree; and a parsed config survives encoding and parsing again unchanged.
// Seeds: the MOSN examples plus testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	for _, file := range mosnFiles(f) {
		data, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, strict := range []bool{false, true} {
			c, _, err := config.Parse(data, config.ParseOptions{Strict: strict})
			if err != nil {
				var ps config.Problems
				if !errors.As(err, &ps) || len(ps) == 0 {
					t.Fatalf("Parse error %T is not Problems: %v", err, err)
				}
				for _, p := range ps {
					if strings.HasPrefix(p.Msg, "decode: ") {
						t.Fatalf("the checks admitted what json-iterator refused: %v", p)
					}
				}
				continue
			}
			c.ApplyDefaults()
			if _, err := c.Validate(); err != nil {
				var ps config.Problems
				if !errors.As(err, &ps) {
					t.Fatalf("Validate error %T is not Problems: %v", err, err)
				}
			}
			out, err := json.Marshal(c)
			if err != nil {
				t.Fatalf("Marshal: %v", err)
			}
			c2, _, err := config.Parse(out, config.ParseOptions{})
			if err != nil {
				t.Fatalf("Parse(Marshal(c)): %v\n%s", err, out)
			}
			if out2, _ := json.Marshal(c2); !bytes.Equal(out, out2) {
				t.Fatalf("round trip changed the config:\n%s\n%s", out, out2)
			}
		}
	})
}
