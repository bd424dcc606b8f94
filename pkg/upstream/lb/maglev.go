package lb

import (
	"cmp"
	"context"
	"math"
	"math/bits"
	"net/netip"
	"slices"
)

// NewMaglev returns LB_MAGLEV: consistent hashing through a Maglev lookup table (Eisenbud
// et al., NSDI 2016) of Options.TableSize slots, a prime (default 65537).
//
// Each host's preference list is the paper's permutation: offset = h1(addr) mod M,
// skip = h2(addr) mod (M−1) + 1, slot j = (offset + j·skip) mod M, h1 and h2 being two
// differently seeded hashes of the address. Hosts take turns claiming their next free
// preferred slot until the table is full; a host of weight w takes a turn in w of every
// maxWeight rounds, so its share of slots follows its weight. Hosts are ordered by address
// first, so the table depends only on the host set, not on the order hosts were listed.
//
// Pick maps Request.HashKey (mixed, and perturbed by Attempt for retries) to a slot. A
// request without a hash key gets a random host. Removing one of N hosts moves that host's
// keys plus a small share of the others (the paper's minimal disruption, not zero).
func NewMaglev(hosts []Host, o Options) Picker {
	if len(hosts) == 0 {
		return noHost{}
	}
	o = o.withDefaults()
	es := newEntries(hosts, nil)
	slices.SortStableFunc(es, func(a, b *entry) int { return cmp.Compare(a.h.Addr(), b.h.Addr()) })
	m := o.TableSize
	if !isPrime(m) {
		m = nextPrime(m)
	}
	if m < uint64(len(es)) {
		m = nextPrime(uint64(len(es)))
	}
	return &maglev{es: es, table: maglevTable(es, m), rand: o.Rand}
}

type maglev struct {
	es    []*entry
	table []uint32
	rand  func() uint64
}

func (p *maglev) Pick(_ context.Context, r *Request) (Host, func(DoneInfo), error) {
	if r == nil || !r.HasHash {
		return p.es[randN(p.rand, len(p.es))].take()
	}
	k := r.HashKey
	if r.Attempt != 0 {
		k ^= uint64(r.Attempt) * 0x9e3779b97f4a7c15
	}
	slot, _ := bits.Mul64(mix64(k), uint64(len(p.table)))
	return p.es[p.table[slot]].take()
}

func maglevTable(es []*entry, m uint64) []uint32 {
	const empty = math.MaxUint32
	n := len(es)
	table := make([]uint32, m)
	for i := range table {
		table[i] = empty
	}
	type perm struct{ pos, skip, credit uint64 }
	ps := make([]perm, n)
	var maxW uint64
	for i, e := range es {
		a := e.h.Addr()
		ps[i] = perm{pos: hashAddr(1, a) % m, skip: hashAddr(2, a)%(m-1) + 1}
		maxW = max(maxW, uint64(e.weight))
	}
	for filled := uint64(0); ; {
		for i := range ps {
			p := &ps[i]
			p.credit += uint64(es[i].weight)
			if p.credit < maxW {
				continue
			}
			p.credit -= maxW
			for table[p.pos] != empty {
				p.pos = (p.pos + p.skip) % m
			}
			table[p.pos] = uint32(i)
			p.pos = (p.pos + p.skip) % m
			if filled++; filled == m {
				return table
			}
		}
	}
}

// hashAddr is FNV-1a over a seed byte and the address, finished with mix64 so that the
// two seeds give unrelated values.
func hashAddr(seed byte, s string) uint64 {
	const prime = 1099511628211
	h := uint64(14695981039346656037)
	h = (h ^ uint64(seed)) * prime
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * prime
	}
	return mix64(h)
}

// mix64 is the splitmix64 finalizer: a bijection that spreads every input bit.
func mix64(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// NewOriginalDst returns LB_ORIGINAL_DST: the host whose address equals
// Request.OriginalDst (IPv4-mapped IPv6 compares equal to IPv4), else ErrNoHost. Hosts
// whose address is not a literal ip:port never match. It only chooses among configured
// hosts; creating hosts on demand (Envoy's ORIGINAL_DST cluster) is not done here.
func NewOriginalDst(hosts []Host, o Options) Picker {
	p := &originalDst{byAddr: make(map[netip.AddrPort]*entry, len(hosts))}
	for _, e := range newEntries(hosts, nil) {
		ap, err := netip.ParseAddrPort(e.h.Addr())
		if err != nil {
			continue
		}
		ap = unmap(ap)
		if _, dup := p.byAddr[ap]; !dup {
			p.byAddr[ap] = e
		}
	}
	return p
}

type originalDst struct {
	byAddr map[netip.AddrPort]*entry
}

func (p *originalDst) Pick(_ context.Context, r *Request) (Host, func(DoneInfo), error) {
	if r == nil || !r.OriginalDst.IsValid() {
		return nil, nil, ErrNoHost
	}
	e := p.byAddr[unmap(r.OriginalDst)]
	if e == nil {
		return nil, nil, ErrNoHost
	}
	return e.take()
}

func unmap(ap netip.AddrPort) netip.AddrPort {
	return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
}
