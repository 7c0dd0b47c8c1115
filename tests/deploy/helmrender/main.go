// helmrender renders the qwen-serve chart and helmfile the way Helm and helmfile do, for tests on
// machines without helm, helmfile or a cluster. It is Go's text/template with the Sprig library
// (the engine and function library Helm uses, from Debian's packages) plus Helm's own functions
// (include, tpl, required, toYaml, fromYaml, toJson, fromJson, lookup), Helm's values handling
// (YAML read through JSON, so numbers are float64; chart defaults coalesced with the given files,
// null deleting a key), Helm's options (missingkey=zero, "<no value>" removed from the output)
// and Chart.yaml's kubeVersion constraint.
//
//	helmrender chart DIR [-f values.yaml]... [--release NAME] [--namespace NS] [--kube-version V]
//	    prints [{"source": "qwen-serve/templates/x.yaml", "content": "..."}] as JSON
//	helmrender helmfile FILE.gotmpl [--state-values-file F]... [--state-values-set a.b=v]...
//	    prints the rendered helmfile state (YAML), its parts rendered in order as helmfile
//	    does: the state values of earlier parts (values:) under those of --state-values-file
//
// What it does not do: talk to a cluster (lookup returns an empty map), .Files, subcharts, hooks.
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
	"sort"
	"strings"
	"text/template"

	"github.com/Masterminds/semver"
	"github.com/Masterminds/sprig"
	"github.com/ghodss/yaml"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// apiVersions is .Capabilities.APIVersions, with Helm's Has method.
type apiVersions []string

func (a apiVersions) Has(v string) bool {
	for _, x := range a {
		if x == v {
			return true
		}
	}
	return false
}

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

var chartFieldNames = map[string]string{
	"apiVersion": "APIVersion", "appVersion": "AppVersion", "kubeVersion": "KubeVersion",
}

func chartMetadata(meta map[string]interface{}) map[string]interface{} {
	out := map[string]interface{}{}
	for k, v := range meta {
		name, ok := chartFieldNames[k]
		if !ok {
			name = strings.ToUpper(k[:1]) + k[1:]
		}
		out[name] = v
	}
	return out
}

func renderChart(args []string) {
	fs := flag.NewFlagSet("chart", flag.ExitOnError)
	var valueFiles multiFlag
	fs.Var(&valueFiles, "f", "values file (repeatable, later files win)")
	release := fs.String("release", "qwen", "release name")
	namespace := fs.String("namespace", "default", "release namespace")
	kubeVersion := fs.String("kube-version", "v1.30.0", "Kubernetes version of .Capabilities")
	if len(args) < 1 {
		die("chart: missing chart directory")
	}
	dir := args[0]
	if err := fs.Parse(args[1:]); err != nil {
		die("%v", err)
	}

	meta := readYAMLMap(filepath.Join(dir, "Chart.yaml"))
	name, _ := meta["name"].(string)
	if name == "" {
		die("Chart.yaml: no name")
	}
	kv, err := semver.NewVersion(*kubeVersion)
	if err != nil {
		die("--kube-version: %v", err)
	}
	if c, ok := meta["kubeVersion"].(string); ok && c != "" {
		constraint, err := semver.NewConstraint(c)
		if err != nil {
			die("Chart.yaml kubeVersion: %v", err)
		}
		if !constraint.Check(kv) {
			die("chart requires kubeVersion: %s which is incompatible with Kubernetes %s", c, *kubeVersion)
		}
	}

	values := readYAMLMap(filepath.Join(dir, "values.yaml"))
	for _, f := range valueFiles {
		values = coalesce(values, readYAMLMap(f))
	}

	// Every file under templates/ joins one template set named "<chart>/templates/<file>".
	t := template.New("gotpl").Funcs(funcMap())
	t.Option("missingkey=zero")
	var files []string
	err = filepath.Walk(filepath.Join(dir, "templates"), func(p string, info os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if !info.IsDir() {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		die("%v", err)
	}
	sort.Strings(files)
	for _, p := range files {
		rel, _ := filepath.Rel(dir, p)
		data, err := os.ReadFile(p)
		if err != nil {
			die("%v", err)
		}
		if _, err := t.New(filepath.ToSlash(filepath.Join(name, rel))).Parse(string(data)); err != nil {
			die("%v", err)
		}
	}
	bindIncludeAndTpl(t, "zero")

	top := map[string]interface{}{
		"Values": values,
		"Chart":  chartMetadata(meta),
		"Release": map[string]interface{}{
			"Name": *release, "Namespace": *namespace, "Service": "Helm",
			"IsInstall": true, "IsUpgrade": false, "Revision": 1,
		},
		"Capabilities": map[string]interface{}{
			"KubeVersion": map[string]interface{}{
				"Version": "v" + kv.String(), "GitVersion": "v" + kv.String(),
				"Major": fmt.Sprint(kv.Major()), "Minor": fmt.Sprint(kv.Minor()),
			},
			"APIVersions": apiVersions{"v1", "apps/v1", "policy/v1", "autoscaling/v2",
				"networking.k8s.io/v1"},
			"HelmVersion": map[string]interface{}{"Version": "v3.14.0"},
		},
		"Files": map[string]interface{}{},
	}

	type output struct {
		Source  string `json:"source"`
		Content string `json:"content"`
	}
	outputs := []output{}
	for _, p := range files {
		rel, _ := filepath.Rel(dir, p)
		base := filepath.Base(p)
		if strings.HasPrefix(base, "_") {
			continue
		}
		tname := filepath.ToSlash(filepath.Join(name, rel))
		top["Template"] = map[string]interface{}{
			"Name": tname, "BasePath": filepath.ToSlash(filepath.Join(name, "templates")),
		}
		var buf bytes.Buffer
		if err := t.ExecuteTemplate(&buf, tname, top); err != nil {
			die("%v", err)
		}
		content := strings.ReplaceAll(buf.String(), "<no value>", "")
		if strings.TrimSpace(content) == "" {
			continue
		}
		outputs = append(outputs, output{Source: tname, Content: content})
	}
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(outputs); err != nil {
		die("%v", err)
	}
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
		die("usage: helmrender chart DIR [flags] | helmrender helmfile FILE [flags]")
	}
	switch os.Args[1] {
	case "chart":
		renderChart(os.Args[2:])
	case "helmfile":
		renderHelmfile(os.Args[2:])
	default:
		die("unknown command %q", os.Args[1])
	}
}
