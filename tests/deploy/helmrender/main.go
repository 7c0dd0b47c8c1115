// helmrender renders the qwen-serve helmfile the way helmfile does, for the deployment tests on
// machines without helmfile or a cluster (the chart itself is rendered by real Helm 3 and 4,
// tests/deploy/deploy_lib.py). It is Go's text/template with the Sprig library (helmfile's
// function library, from Debian's packages) plus helmfile's get/getOrNil and Helm's
// include, tpl, required, toYaml, fromYaml, toJson, fromJson (YAML read through JSON, so
// numbers are float64; null deleting a key when values are coalesced).
//
//	helmrender helmfile FILE.gotmpl [--state-values-file F]... [--state-values-set a.b=v]...
//	    prints the rendered helmfile state (YAML), its parts rendered in order as helmfile
//	    does: the state values of earlier parts (values:) under those of --state-values-file
//	    and --state-values-set (a string)
//
// What it does not do: talk to a cluster, helmfile's environments and .Files.
package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"text/template"

	"github.com/Masterminds/sprig"
	"github.com/ghodss/yaml"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

func die(format string, args ...interface{}) {
	fmt.Fprintf(os.Stderr, "helmrender: "+format+"\n", args...)
	os.Exit(1)
}

func readYAMLMap(path string) map[string]interface{} {
	data, err := os.ReadFile(path)
	if err != nil {
		die("%v", err)
	}
	out := map[string]interface{}{}
	if err := yaml.Unmarshal(data, &out); err != nil {
		die("%s: %v", path, err)
	}
	if out == nil {
		out = map[string]interface{}{}
	}
	return out
}

// coalesce merges src over dst as Helm does for user values over chart defaults: maps merge
// recursively, anything else replaces, and null deletes the key.
func coalesce(dst, src map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range dst {
		out[k] = v
	}
	for k, v := range src {
		if v == nil {
			delete(out, k)
			continue
		}
		sm, sok := v.(map[string]interface{})
		dm, dok := out[k].(map[string]interface{})
		if sok && dok {
			out[k] = coalesce(dm, sm)
		} else {
			out[k] = v
		}
	}
	return out
}

func toYAML(v interface{}) string {
	data, err := yaml.Marshal(v)
	if err != nil {
		return ""
	}
	return strings.TrimSuffix(string(data), "\n")
}

func fromYAML(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := yaml.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func toJSON(v interface{}) string {
	data, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(data)
}

func fromJSON(s string) map[string]interface{} {
	m := map[string]interface{}{}
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		m["Error"] = err.Error()
	}
	return m
}

func required(warn string, val interface{}) (interface{}, error) {
	if val == nil {
		return val, errors.New(warn)
	}
	if s, ok := val.(string); ok && s == "" {
		return val, errors.New(warn)
	}
	return val, nil
}

// funcMap is Helm's: Sprig without env/expandenv, plus Helm's functions. include and tpl need
// the template set, so they are bound after parsing.
func funcMap() template.FuncMap {
	f := sprig.TxtFuncMap()
	delete(f, "env")
	delete(f, "expandenv")
	f["toYaml"] = toYAML
	f["fromYaml"] = fromYAML
	f["toJson"] = toJSON
	f["fromJson"] = fromJSON
	f["required"] = required
	f["lookup"] = func(string, string, string, string) (map[string]interface{}, error) {
		return map[string]interface{}{}, nil
	}
	f["include"] = func(string, interface{}) (string, error) { return "", errors.New("unbound") }
	f["tpl"] = func(string, interface{}) (string, error) { return "", errors.New("unbound") }
	return f
}

func bindIncludeAndTpl(t *template.Template, missingKey string) {
	depth := 0
	t.Funcs(template.FuncMap{
		"include": func(name string, data interface{}) (string, error) {
			depth++
			defer func() { depth-- }()
			if depth > 1000 {
				return "", fmt.Errorf("include %q: recursion too deep", name)
			}
			var buf bytes.Buffer
			if err := t.ExecuteTemplate(&buf, name, data); err != nil {
				return "", err
			}
			return buf.String(), nil
		},
		"tpl": func(text string, data interface{}) (string, error) {
			c, err := t.Clone()
			if err != nil {
				return "", err
			}
			c.Option("missingkey=" + missingKey)
			if _, err := c.New("tpl").Parse(text); err != nil {
				return "", err
			}
			var buf bytes.Buffer
			if err := c.ExecuteTemplate(&buf, "tpl", data); err != nil {
				return "", err
			}
			return strings.ReplaceAll(buf.String(), "<no value>", ""), nil
		},
	})
}

// get is helmfile's: a value at a dotted path of a map, or the default.
func get(path string, varArgs ...interface{}) (interface{}, error) {
	var def interface{}
	var obj interface{}
	switch len(varArgs) {
	case 1:
		obj = varArgs[0]
	case 2:
		def, obj = varArgs[0], varArgs[1]
	default:
		return nil, fmt.Errorf("get: wrong number of arguments")
	}
	for _, k := range strings.Split(path, ".") {
		m, ok := obj.(map[string]interface{})
		if !ok {
			return def, nil
		}
		v, ok := m[k]
		if !ok {
			if len(varArgs) == 2 {
				return def, nil
			}
			return nil, fmt.Errorf("get: no value at %q", path)
		}
		obj = v
	}
	return obj, nil
}

var partSeparator = regexp.MustCompile(`(?m)^---[ \t]*$`)

func renderHelmfile(args []string) {
	fs := flag.NewFlagSet("helmfile", flag.ExitOnError)
	var stateFiles, stateSets multiFlag
	fs.Var(&stateFiles, "state-values-file", "state values file (repeatable)")
	fs.Var(&stateSets, "state-values-set", "a.b.c=value: one state value, a string (repeatable)")
	if len(args) < 1 {
		die("helmfile: missing file")
	}
	file := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		die("%v", err)
	}
	data, err := os.ReadFile(file)
	if err != nil {
		die("%v", err)
	}
	overrides := map[string]interface{}{}
	for _, f := range stateFiles {
		overrides = coalesce(overrides, readYAMLMap(f))
	}
	for _, kv := range stateSets {
		eq := strings.Index(kv, "=")
		if eq <= 0 {
			die("--state-values-set %q: not key=value", kv)
		}
		keys := strings.Split(kv[:eq], ".")
		set := map[string]interface{}{keys[len(keys)-1]: kv[eq+1:]}
		for i := len(keys) - 2; i >= 0; i-- {
			set = map[string]interface{}{keys[i]: set}
		}
		overrides = coalesce(overrides, set)
	}
	defaults := map[string]interface{}{}
	var rendered []string
	for i, part := range partSeparator.Split(string(data), -1) {
		values := coalesce(defaults, overrides)
		f := funcMap()
		f["get"] = get
		f["getOrNil"] = func(path string, obj interface{}) (interface{}, error) {
			return get(path, nil, obj)
		}
		t := template.New(fmt.Sprintf("%s.part.%d", filepath.Base(file), i)).Funcs(f)
		t.Option("missingkey=error")
		if _, err := t.Parse(part); err != nil {
			die("%v", err)
		}
		bindIncludeAndTpl(t, "error")
		var buf bytes.Buffer
		top := map[string]interface{}{
			"Values": values, "StateValues": values,
			"Environment": map[string]interface{}{"Name": "default", "Values": values},
		}
		if err := t.Execute(&buf, top); err != nil {
			die("%v", err)
		}
		rendered = append(rendered, buf.String())
		// State values a part declares are defaults for the parts after it.
		var doc map[string]interface{}
		if err := yaml.Unmarshal(buf.Bytes(), &doc); err != nil {
			die("%s part %d: %v\n%s", file, i, err, buf.String())
		}
		if vs, ok := doc["values"].([]interface{}); ok {
			for _, v := range vs {
				m, ok := v.(map[string]interface{})
				if !ok {
					die("%s part %d: values entries must be maps here", file, i)
				}
				defaults = coalesce(defaults, m)
			}
		}
	}
	fmt.Print(strings.Join(rendered, "---\n"))
}

func main() {
	if len(os.Args) < 2 {
		die("usage: helmrender helmfile FILE [--state-values-file F]... [--state-values-set a.b=v]...")
	}
	switch os.Args[1] {
	case "helmfile":
		renderHelmfile(os.Args[2:])
	default:
		die("unknown command %q", os.Args[1])
	}
}
