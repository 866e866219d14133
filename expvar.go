package zcnet

import (
	"expvar"
	"fmt"
	"sync"
)

var publishMu sync.Mutex

// Expvar returns an expvar.Var whose value is l.Stats(), computed each time it is read.
// Publish it under a name of your choice: expvar.Publish("zcnet", l.Expvar()).
func (l *Listener) Expvar() expvar.Var {
	return expvar.Func(func() any { return l.Stats() })
}

// Publish publishes l.Stats() in expvar (and so on /debug/vars) under name. Unlike
// expvar.Publish it returns an error, rather than panicking, when the name is taken.
func (l *Listener) Publish(name string) error {
	publishMu.Lock()
	defer publishMu.Unlock()
	if expvar.Get(name) != nil {
		return fmt.Errorf("zcnet: expvar name %q already published", name)
	}
	expvar.Publish(name, l.Expvar())
	return nil
}
