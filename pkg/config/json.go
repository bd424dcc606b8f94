package config

import (
	"encoding/json"

	jsoniter "github.com/json-iterator/go"
)

// json.go is the only importer of json-iterator in the module.

// RawMessage is an undecoded JSON value (extension configs). It is encoding/json's type, which
// json-iterator also decodes natively, so a Config decodes the same with either library.
type RawMessage = json.RawMessage

// lenient decodes as MOSN's loader does: unknown keys ignored, keys matched
// case-insensitively (json-iterator's default, like encoding/json).
var lenient = jsoniter.Config{ValidateJsonRawMessage: true}.Froze()

// Unmarshal decodes an extension's raw config into v.
func Unmarshal(raw RawMessage, v any) error { return lenient.Unmarshal(raw, v) }

// decodeNormalized decodes a document the walker has already checked and normalized.
func decodeNormalized(doc []byte, v any) error { return lenient.Unmarshal(doc, v) }
