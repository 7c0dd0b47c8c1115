// Validates rendered Kubernetes objects against their schemas (tests/deploy, label unit).
//
//   node validate_manifests.mjs TOOLS_DIR MANIFESTS.json
//
// MANIFESTS.json is [{"name": "...", "object": {...}}]. Prints {"checked": N, "errors": [...]}
// and exits 0 (the caller judges); exits 2 on bad usage. Two checks per object, both from the
// npm packages scripts/deploy-tools installs into TOOLS_DIR:
//  1. kubernetes-models' validate(): the OpenAPI schema of the object's kind (Kubernetes 1.3x
//     for the built-in kinds; prometheus-operator, KEDA, Gateway API and Istio CRDs): required
//     fields, types, enums, formats;
//  2. TypeScript's excess property check against the same packages' type declarations: an
//     object literal assigned to IDeployment (etc.) may hold only fields the type declares, so a
//     misspelled field name anywhere in the object (`imagePullPolice`, `replicass`) is an error.
//     The OpenAPI schemas of Kubernetes allow unknown fields (the API server drops them with a
//     warning), so check 1 alone would pass them.
// A kind that neither package describes is an error too: every rendered object is checked.
import fs from "node:fs";
import path from "node:path";
import { pathToFileURL } from "node:url";

const [tools, input] = process.argv.slice(2);
if (!tools || !input) {
  console.error("usage: node validate_manifests.mjs TOOLS_DIR MANIFESTS.json");
  process.exit(2);
}
const nodeModules = path.join(tools, "node_modules");

// The npm package that describes an API group.
const PACKAGES = {
  "": "kubernetes-models",
  apps: "kubernetes-models",
  batch: "kubernetes-models",
  policy: "kubernetes-models",
  autoscaling: "kubernetes-models",
  "networking.k8s.io": "kubernetes-models",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
  "keda.sh": "@kubernetes-models/keda",
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "networking.istio.io": "@kubernetes-models/istio",
};

function modulePath(obj) {
  const [group, version] = obj.apiVersion.includes("/")
    ? obj.apiVersion.split("/")
    : ["", obj.apiVersion];
  const pkg = PACKAGES[group];
  if (!pkg) return null;
  const sub = group === "" ? `${version}/${obj.kind}` : `${group}/${version}/${obj.kind}`;
  return { pkg, sub, file: path.join(nodeModules, pkg, `${sub}.js`) };
}

function describe(err) {
  const where = err.instancePath || "/";
  const extra = err.params && Object.keys(err.params).length ? ` ${JSON.stringify(err.params)}` : "";
  return `${where}: ${err.message}${extra}`;
}

const manifests = JSON.parse(fs.readFileSync(input, "utf8"));
const errors = [];
const typed = [];
for (const { name, object } of manifests) {
  const m = object && object.apiVersion && object.kind ? modulePath(object) : null;
  if (!m || !fs.existsSync(m.file)) {
    errors.push(`${name}: no schema for ${object && object.apiVersion} ${object && object.kind}`);
    continue;
  }
  const mod = await import(pathToFileURL(m.file).href);
  const Model = mod[object.kind];
  try {
    new Model(object).validate();
  } catch (e) {
    const details = e.errors ? e.errors.map(describe).join("; ") : e.message;
    errors.push(`${name}: ${object.kind} does not match its schema: ${details}`);
  }
  typed.push({ name, m, object });
}

// The strict field check: one TypeScript module, one typed constant per object.
const ts = (await import(pathToFileURL(path.join(nodeModules, "typescript", "lib", "typescript.js")).href)).default;
const dir = fs.mkdtempSync(path.join(tools, "check-"));
try {
  const file = path.join(dir, "manifests.mts");
  const lines = [];
  const owner = [];  // line index -> manifest name
  const imports = new Map();
  for (const { m, object } of typed) {
    const id = `I${object.kind}_${imports.size}`;
    const key = `${m.pkg}/${m.sub}`;
    if (!imports.has(key)) imports.set(key, { id, kind: object.kind });
  }
  for (const [key, { id, kind }] of imports) {
    lines.push(`import type { I${kind} as ${id} } from "${key}";`);
    owner.push("(imports)");
  }
  typed.forEach(({ name, m, object }, i) => {
    const { id } = imports.get(`${m.pkg}/${m.sub}`);
    const text = JSON.stringify(object, null, 1).split("\n");
    text[0] = `export const m${i}: ${id} = ${text[0]}`;
    text[text.length - 1] += ";";
    for (const t of text) {
      lines.push(t);
      owner.push(name);
    }
  });
  fs.writeFileSync(file, lines.join("\n") + "\n");
  const program = ts.createProgram([file], {
    strict: true,
    noEmit: true,
    module: ts.ModuleKind.NodeNext,
    moduleResolution: ts.ModuleResolutionKind.NodeNext,
    target: ts.ScriptTarget.ES2022,
    skipLibCheck: true,
    types: [],
  });
  for (const d of ts.getPreEmitDiagnostics(program)) {
    const msg = ts.flattenDiagnosticMessageText(d.messageText, "\n");
    if (d.file && path.resolve(d.file.fileName) === path.resolve(file)) {
      const { line } = d.file.getLineAndCharacterOfPosition(d.start);
      errors.push(`${owner[line]}: ${msg} (line ${line + 1}: ${lines[line].trim()})`);
    } else {
      errors.push(`typescript: ${msg}`);
    }
  }
} finally {
  fs.rmSync(dir, { recursive: true, force: true });
}

console.log(JSON.stringify({ checked: manifests.length, errors }));
