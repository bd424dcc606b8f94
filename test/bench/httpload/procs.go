package main

import "time"

func micros(d time.Duration) float64 { return float64(d) / float64(time.Microsecond) }
