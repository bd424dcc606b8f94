package benchproc

import (
	"os"
	"testing"
	"time"
)

// From loadgen.
func TestParseStat(t *testing.T) {
	// A command name with spaces and parentheses; utime 250, stime 50 ticks.
	in := []byte("4242 (ng ) (x) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 1 0 123 456 789\n")
	ppid, c, err := ParseStat(in)
	if err != nil {
		t.Fatal(err)
	}
	if ppid != 17 || c.Total() != 3*time.Second {
		t.Fatalf("ParseStat = %d, %+v; want ppid 17, cpu 3s", ppid, c)
	}
	for _, bad := range []string{"", "1 (x) S 1 2", "1 (x) S z 1 1 0 -1 0 0 0 0 0 a b"} {
		if _, _, err := ParseStat([]byte(bad)); err == nil {
			t.Errorf("ParseStat(%q): no error", bad)
		}
	}
	self, err := ProcessCPU(os.Getpid())
	if err != nil || self.Total() < 0 {
		t.Fatalf("ProcessCPU(self) = %v, %v", self, err)
	}
}

// From httpload: the user/sys split.
func TestParseStatUserSys(t *testing.T) {
	stat := "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 100 0 0 0 250 125 0 0 20 0 3 0 100 0 0\n"
	ppid, c, err := ParseStat([]byte(stat))
	if err != nil {
		t.Fatal(err)
	}
	if ppid != 17 || c.User != 2500*time.Millisecond || c.Sys != 1250*time.Millisecond {
		t.Errorf("ppid %d cpu %v", ppid, c)
	}
}

// From rpcload (TestParseStatCPU).
func TestParseStatCPU(t *testing.T) {
	line := "123 (a b) c)) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0 100 0 0"
	_, c, err := ParseStat([]byte(line))
	if d := c.Total(); err != nil || d != 3*time.Second {
		t.Fatalf("%v %v", d, err)
	}
}

func TestParseSystemBusy(t *testing.T) {
	d, err := ParseSystemBusy([]byte("cpu  100 5 20 9999 7 3 2 11 0 0\ncpu0 1 2 3 4 5 6 7 8 9 10\n"))
	if err != nil || d != 130*ClockTick {
		t.Fatalf("ParseSystemBusy = %v, %v; want %v", d, err, 130*ClockTick)
	}
	if _, err := ParseSystemBusy([]byte("intr 1 2 3\n")); err == nil {
		t.Fatal("no error for a first line that is not cpu")
	}
}

func TestParseCPUInfo(t *testing.T) {
	n, model := ParseCPUInfo([]byte("processor\t: 0\nmodel name\t: Test CPU @ 1GHz\n\nprocessor\t: 1\nmodel name\t: Test CPU @ 1GHz\n"))
	if n != 2 || model != "Test CPU @ 1GHz" {
		t.Fatalf("ParseCPUInfo = %d, %q", n, model)
	}
}
