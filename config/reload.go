package config

import (
	"reflect"
	"slices"
)

// Diff lists the settings that differ between old and new, by their config
// file key: those a reload applies while serving (tagged reload:"live") and
// those that take effect only after a restart. A reload applies the first
// and says which of the second it could not, so that no change is ever
// ignored silently.
func Diff(old, new Config) (live, restart []string) {
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(new)
	t := ov.Type()
	for i := range t.NumField() {
		f := t.Field(i)
		key := f.Tag.Get("key")
		if key == "" || key == "-" {
			continue
		}
		if reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			continue
		}
		if f.Tag.Get("reload") == "live" {
			live = append(live, key)
		} else {
			restart = append(restart, key)
		}
	}
	slices.Sort(live)
	slices.Sort(restart)
	return live, restart
}

// Applied is the configuration in effect after a reload from running to
// new: new's live settings, running's others (they wait for a restart).
func Applied(running, new Config) Config {
	out := running
	ov, nv := reflect.ValueOf(&out).Elem(), reflect.ValueOf(new)
	t := ov.Type()
	for i := range t.NumField() {
		if t.Field(i).Tag.Get("reload") == "live" {
			ov.Field(i).Set(nv.Field(i))
		}
	}
	return out
}
