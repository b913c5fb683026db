package router_test

import (
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"testing"

	"github.com/signalmesh/signalmesh/router"
)

// workload is a realistic route set: 1,000 routes over <domain>.<entity>.<action>
// types, mostly literal, with * and ** routes mixed in, and types to route.
func workload(n int) (patterns []string, types []string) {
	r := rand.New(rand.NewPCG(21, 22))
	domains := make([]string, 20)
	for i := range domains {
		domains[i] = fmt.Sprintf("dom%d", i)
	}
	entities := []string{"user", "order", "payment", "invoice", "cart", "shipment", "stock", "session", "alert", "report"}
	actions := []string{"created", "updated", "deleted", "failed", "completed"}
	pick := func(s []string) string { return s[r.IntN(len(s))] }
	for len(patterns) < n {
		d, e, a := pick(domains), pick(entities), pick(actions)
		switch k := r.IntN(20); {
		case k < 14:
			patterns = append(patterns, d+"."+e+"."+a)
		case k < 16:
			patterns = append(patterns, d+".*."+a)
		case k < 17:
			patterns = append(patterns, d+"."+e+".*")
		case k < 18:
			patterns = append(patterns, d+".**")
		case k < 19:
			patterns = append(patterns, d+".**."+a)
		default:
			patterns = append(patterns, "**."+a)
		}
	}
	for i := 0; i < 1024; i++ {
		types = append(types, pick(domains)+"."+pick(entities)+"."+pick(actions))
	}
	return patterns, types
}

// linear is the baseline: every route checked in turn with a pre-split
// pattern, then the matches sorted into routing order.
type linear struct {
	routes []linRoute
}

type linRoute struct {
	segs []string
	spec int
	seq  int
}

func (l *linear) match(typ string) []int {
	t := strings.Split(typ, ".")
	var out []linRoute
	for _, rt := range l.routes {
		if naiveMatch(rt.segs, t) {
			out = append(out, rt)
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].spec > out[j].spec })
	ids := make([]int, len(out))
	for i, rt := range out {
		ids[i] = rt.seq
	}
	return ids
}

func BenchmarkMatch1000(b *testing.B) {
	patterns, types := workload(1000)
	r := router.New[int]()
	lin := &linear{}
	for i, p := range patterns {
		if err := r.Add(p, i); err != nil {
			b.Fatal(err)
		}
		lin.routes = append(lin.routes, linRoute{segs: strings.Split(p, "."), spec: router.Specificity(p), seq: i})
	}
	matched := 0
	for _, typ := range types {
		got, want := r.Match(typ), lin.match(typ)
		if fmt.Sprint(got) != fmt.Sprint(want) && len(want) > 0 {
			b.Fatalf("trie and linear disagree on %s: %v vs %v", typ, got, want)
		}
		matched += len(got)
	}
	b.Logf("%d routes, %.1f matches per type on average", len(patterns), float64(matched)/float64(len(types)))
	b.Run("trie", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			_ = r.Match(types[i&1023])
			i++
		}
	})
	b.Run("linear", func(b *testing.B) {
		b.ReportAllocs()
		i := 0
		for b.Loop() {
			_ = lin.match(types[i&1023])
			i++
		}
	})
	b.Run("trie-parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				_ = r.Match(types[i&1023])
				i++
			}
		})
	})
}

// BenchmarkAdd measures one Add into a router that already holds 1,000
// routes (copy-on-write copies the changed path).
func BenchmarkAdd(b *testing.B) {
	patterns, _ := workload(2000)
	r := router.New[int]()
	for i, p := range patterns[:1000] {
		_ = r.Add(p, i)
	}
	b.ReportAllocs()
	i := 0
	for b.Loop() {
		p := patterns[1000+i%1000]
		_ = r.Add(p, i)
		r.Remove(p) // keep the size at about 1,000
		i++
	}
}
