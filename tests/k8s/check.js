#!/usr/bin/env node
// tests/k8s/check.js - checks chunkmill's Kubernetes manifests offline.
//
// For k8s/base and every k8s/overlays/* it:
//   1. renders the kustomization with `kubectl kustomize`;
//   2. validates every object against its schema (Kubernetes, Argo Rollouts,
//      KEDA, Prometheus Operator models from npm);
//   3. a strict pass: rejects any field the schema does not declare (the
//      schemas themselves accept unknown keys, which hides typos);
//   4. policy: probes on declared ports and real daemon paths, resources,
//      non-root and hardened securityContexts, grace period above the drain
//      timeout, fetcher and SQLite saver Recreate with one replica, savers
//      on PostgreSQL RollingUpdate with a PodDisruptionBudget, references that
//      resolve (ConfigMaps, Secrets, PVCs, Services, PDBs, autoscalers,
//      analyses); NATS authorization: every daemon connects as its role's
//      user with the password from a Secret (never a literal), the fetcher
//      and saver read the lease key from a Secret volume, the NATS server
//      runs a config file with every role's password from a Secret, and
//      k8s/base/nats-server.conf is deploy/nats/nats-server.conf.
//   7. every k8s/examples/*.yaml validates (schema, strict) and passes the
//      policy together with k8s/base's objects; a Job running the chunkmill
//      CLI connects as the ops user with the password from a Secret, reads
//      the API token from a Secret volume, is hardened and never retried; a
//      fetcher running --serve reads its API token from a Secret volume.
//   6. k8s/components/app9/nats-server.conf is deploy/nats/nats-server.conf
//      (parsed: every key, user and permission) plus only the additions its
//      header documents; broken copies of either file are rejected.
//   5. NATS runs clustered (k8s/base and every overlay): a StatefulSet of 3
//      nats-server pods with a headless Service, cluster routes to each pod
//      by its stable name, a PodDisruptionBudget (minAvailable 2), pod
//      anti-affinity, probes, and the daemons' CHUNKMILL_NATS_URL naming a
//      Service of those pods.
// The secrets themselves are not in the repository (scripts/gen-secrets
// makes them): k8s/ is copied to a temporary directory, the generator
// fills its k8s/base/secrets/, and that copy is rendered.
// Then it runs the same checks over testdata/broken.yaml, whose objects are
// each broken on purpose, and asserts every one is rejected for its reason;
// the NATS cluster check is run over broken copies of k8s/base.
//
// Usage: node check.js [--repo DIR] [--verbose]
// Prints one `ok`/`not ok` line per test and closes with
// `k8s: N passed, M failed`; exits 1 if anything failed.
"use strict";

const fs = require("fs");
const path = require("path");
const { execFileSync } = require("child_process");
const YAML = require("yaml");

// ---- capture every schema the models register (for the strict pass) ----
const validateMod = require("@kubernetes-models/validate");
const SCHEMAS = new Map();
const origRegister = validateMod.register;
validateMod.register = function register(id, schema) {
  if (!SCHEMAS.has(id)) SCHEMAS.set(id, schema);
  return origRegister(id, schema);
};

const args = process.argv.slice(2);
const REPO = path.resolve(argValue("--repo") || path.join(__dirname, "..", ".."));
const VERBOSE = args.includes("--verbose");

function argValue(name) {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

// ---- model lookup -------------------------------------------------------
const MODEL_PACKAGES = {
  "argoproj.io": "@kubernetes-models/argo-rollouts/argoproj.io",
  "keda.sh": "@kubernetes-models/keda/keda.sh",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator/monitoring.coreos.com",
};

function modelFor(apiVersion, kind) {
  if (typeof apiVersion !== "string" || typeof kind !== "string") return null;
  const slash = apiVersion.indexOf("/");
  const group = slash < 0 ? "" : apiVersion.slice(0, slash);
  const version = slash < 0 ? apiVersion : apiVersion.slice(slash + 1);
  let mod;
  try {
    if (group === "") mod = require(`kubernetes-models/${version}`);
    else if (MODEL_PACKAGES[group]) mod = require(`${MODEL_PACKAGES[group]}/${version}`);
    else mod = require(`kubernetes-models/${group}/${version}`);
  } catch (e) {
    return null;
  }
  return mod && typeof mod[kind] === "function" ? mod[kind] : null;
}

// ---- 2. schema validation -----------------------------------------------
function schemaErrors(obj) {
  const Model = modelFor(obj.apiVersion, obj.kind);
  if (!Model) return [`no schema known for ${obj.apiVersion} ${obj.kind}`];
  try {
    new Model(obj).validate();
    return [];
  } catch (e) {
    const errs = Array.isArray(e.errors) ? e.errors : null;
    if (!errs) return [`schema: ${e.message}`];
    return errs.map((x) => `schema: ${x.instancePath || "/"} ${x.message}`);
  }
}

// ---- 3. strict pass: unknown fields -------------------------------------
function schemaIdOf(Model) {
  // The model's schema id is the one registered last-but-dependencies: find
  // it through a probe object (apiVersion/kind enums identify it).
  return Model && Model.prototype && Object.getOwnPropertySymbols(Model.prototype)
    .map((s) => Model.prototype[s]).find((v) => typeof v === "string");
}

function resolveRef(ref) {
  const id = ref.replace(/#$/, "");
  const s = SCHEMAS.get(id);
  if (!s) throw new Error(`strict pass: unresolved schema $ref ${ref}`);
  return s;
}

function isObject(v) {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

// Returns a list of "unknown field <path>" errors for value under schema.
function strictWalk(schema, value, where, out) {
  if (!schema || value === null || value === undefined) return out;
  if (schema.$ref) return strictWalk(resolveRef(schema.$ref), value, where, out);
  if (Array.isArray(schema.allOf)) for (const s of schema.allOf) strictWalk(s, value, where, out);
  for (const key of ["oneOf", "anyOf"]) {
    if (!Array.isArray(schema[key])) continue;
    // Pick the branch under which the value has the fewest unknown fields
    // (branches of the wrong JSON type are skipped).
    let best = null;
    for (const s of schema[key]) {
      if (!typeFits(s, value)) continue;
      const errs = strictWalk(s, value, where, []);
      if (best === null || errs.length < best.length) best = errs;
    }
    if (best) out.push(...best);
  }
  if (isObject(value)) {
    const props = isObject(schema.properties) ? schema.properties : null;
    const addl = schema.additionalProperties;
    const preserve = schema["x-kubernetes-preserve-unknown-fields"] === true;
    for (const [k, v] of Object.entries(value)) {
      const p = `${where}.${k}`;
      if (props && Object.prototype.hasOwnProperty.call(props, k)) {
        strictWalk(props[k], v, p, out);
      } else if (isObject(addl)) {
        strictWalk(addl, v, p, out);
      } else if (props && addl !== true && !preserve) {
        out.push(`unknown field ${p.replace(/^\./, "")}`);
      }
    }
  } else if (Array.isArray(value) && schema.items) {
    value.forEach((v, i) => strictWalk(schema.items, v, `${where}[${i}]`, out));
  }
  return out;
}

function typeFits(schema, value) {
  let s = schema;
  if (s && s.$ref) s = resolveRef(s.$ref);
  if (!s || !s.type) return true;
  const types = Array.isArray(s.type) ? s.type : [s.type];
  const t = value === null ? "null" : Array.isArray(value) ? "array"
    : Number.isInteger(value) ? "integer" : typeof value;
  return types.includes(t) || (t === "integer" && types.includes("number"));
}

function strictErrors(obj) {
  const Model = modelFor(obj.apiVersion, obj.kind);
  if (!Model) return [];
  const id = schemaIdOf(Model);
  const schema = id && SCHEMAS.get(id);
  if (!schema) return [`strict pass: schema for ${obj.kind} was not captured`];
  return strictWalk(schema, obj, "", []);
}

// ---- 4. policy -----------------------------------------------------------
const DAEMONS = new Set(["fetcher", "mapper", "saver"]);
const PROBE_PATHS = new Set(["/healthz", "/readyz"]);
const DEFAULT_DRAIN_S = 25;
const DEFAULT_HTTP_PORT = 8080;
const WORKLOAD_KINDS = new Set(["Deployment", "StatefulSet", "DaemonSet", "Rollout"]);

function parseDurationSeconds(text) {
  // The daemons' duration syntax: 250ms, 5s, 2m, 1h, or bare seconds.
  const m = /^\s*([0-9]*\.?[0-9]+)\s*(ms|s|m|h)?\s*$/.exec(String(text));
  if (!m) return NaN;
  const n = parseFloat(m[1]);
  return { ms: n / 1000, s: n, m: n * 60, h: n * 3600, undefined: n }[m[2]];
}

function daemonOf(container) {
  const cmd = (container.command && container.command[0]) || (container.args && container.args[0]) || "";
  const base = path.basename(String(cmd));
  return DAEMONS.has(base) ? base : null;
}

// Effective value of CHUNKMILL_<NAME> for a container (args flag > env >
// envFrom ConfigMap), or undefined.
function settingOf(container, name, ctx) {
  const flag = `--${name}`;
  const argv = [...(container.command || []), ...(container.args || [])];
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === flag && i + 1 < argv.length) return argv[i + 1];
    if (String(argv[i]).startsWith(`${flag}=`)) return String(argv[i]).slice(flag.length + 1);
  }
  const envName = `CHUNKMILL_${name.toUpperCase().replace(/-/g, "_")}`;
  for (const e of container.env || []) {
    if (e.name === envName && e.value !== undefined) return e.value;
  }
  // envFrom: later sources win.
  let v;
  for (const src of container.envFrom || []) {
    const ref = src.configMapRef && src.configMapRef.name;
    const cm = ref && ctx.configMaps.get(ref);
    const key = (src.prefix || "") ? null : envName;
    if (cm && cm.data && key && cm.data[key] !== undefined) v = cm.data[key];
  }
  return v;
}

// A saver whose --db / CHUNKMILL_DB is a PostgreSQL connection string (a
// postgres:// URL or a libpq keyword string), or comes from a Secret (a
// SQLite path is never secret), writes to PostgreSQL.
function savesToPostgres(container, ctx) {
  for (const e of container.env || []) {
    if (e.name === "CHUNKMILL_DB" && e.valueFrom && e.valueFrom.secretKeyRef) return true;
  }
  const db = settingOf(container, "db", ctx);
  return db !== undefined && (/^postgres(ql)?:\/\//.test(db) || db.includes("="));
}

// Where a container's env var comes from: {value} | {secret: {name, key}} |
// {other: true} | undefined.
function envSource(container, envName) {
  for (const e of container.env || []) {
    if (e.name !== envName) continue;
    if (e.value !== undefined) return { value: e.value };
    const sk = e.valueFrom && e.valueFrom.secretKeyRef;
    if (sk) return { secret: { name: sk.name, key: sk.key } };
    return { other: true };
  }
  return undefined;
}

function secretHasKey(ctx, name, key) {
  const s = ctx.secrets.get(name);
  return !!s && ((s.data && s.data[key] !== undefined) || (s.stringData && s.stringData[key] !== undefined));
}

// Credentials of a chunkmill daemon container (see the header).
function credentialErrors(cn, daemon, c, pod, ctx) {
  const errs = [];
  const argv = [...(c.command || []), ...(c.args || [])].map(String);
  for (const a of argv) {
    if (/^--nats-(password|token)(=|$)/.test(a)) errs.push(`${cn}: a NATS secret on the command line (${a.split("=")[0]})`);
  }
  for (const e of c.env || []) {
    if (/(PASSWORD|TOKEN)$/.test(e.name) && e.value !== undefined) errs.push(`${cn}: env ${e.name} is a literal value, not from a Secret`);
  }
  const user = settingOf(c, "nats-user", ctx);
  if (user !== daemon) errs.push(`${cn}: CHUNKMILL_NATS_USER is ${user === undefined ? "not set" : `"${user}"`}, not the ${daemon} role's user`);
  const pw = envSource(c, "CHUNKMILL_NATS_PASSWORD");
  if (!pw || !pw.secret) errs.push(`${cn}: CHUNKMILL_NATS_PASSWORD does not come from a Secret`);
  else if (!secretHasKey(ctx, pw.secret.name, pw.secret.key)) errs.push(`${cn}: CHUNKMILL_NATS_PASSWORD refers to missing Secret key ${pw.secret.name}/${pw.secret.key}`);
  if (daemon === "fetcher" && serves(c, ctx)) {
    const file = settingOf(c, "api-token-file", ctx);
    if (!file) errs.push(`${cn}: runs --serve without an API token (CHUNKMILL_API_TOKEN_FILE): job API writes would be refused`);
    else errs.push(...secretFileErrors(cn, c, pod, ctx, file, "the API token file"));
  }
  if (daemon === "fetcher" || daemon === "saver") {
    const file = settingOf(c, "lease-key-file", ctx);
    if (!file) errs.push(`${cn}: no lease key (CHUNKMILL_LEASE_KEY_FILE): leases would not be authenticated`);
    else {
      const vols = new Map((pod.volumes || []).map((v) => [v.name, v]));
      const m = (c.volumeMounts || []).find((vm) => String(file).startsWith(String(vm.mountPath).replace(/\/?$/, "/")));
      const v = m && vols.get(m.name);
      if (!v || !v.secret) errs.push(`${cn}: the lease key file ${file} is not on a Secret volume`);
      else if (!ctx.secrets.has(v.secret.secretName)) errs.push(`${cn}: the lease key Secret ${v.secret.secretName} is not defined`);
    }
  }
  return errs;
}

// Whether a fetcher container runs the job service (--serve).
function serves(c, ctx) {
  const argv = [...(c.command || []), ...(c.args || [])].map(String);
  if (argv.includes("--serve") || argv.includes("--serve=true")) return true;
  const v = settingOf(c, "serve", ctx);
  return v !== undefined && /^(1|true|yes|on)$/i.test(String(v));
}

// A secret read from a file must sit on a volume of a Secret that exists.
function secretFileErrors(cn, c, pod, ctx, file, what) {
  const vols = new Map((pod.volumes || []).map((v) => [v.name, v]));
  const m = (c.volumeMounts || []).find((vm) => String(file).startsWith(String(vm.mountPath).replace(/\/?$/, "/")));
  const v = m && vols.get(m.name);
  if (!v || !v.secret) return [`${cn}: ${what} ${file} is not on a Secret volume`];
  if (!ctx.secrets.has(v.secret.secretName)) return [`${cn}: ${what}'s Secret ${v.secret.secretName} is not defined`];
  return [];
}

// A Job running the chunkmill CLI (k8s/examples): hardened like the
// daemons, resources set, not retried (a second attempt would submit the
// same job again: 409), connecting as the NATS user ops with its password
// from a Secret, the API token read from a file on a Secret volume, and
// every ConfigMap and Secret it refers to defined.
function cliJobErrors(d, ctx) {
  const errs = [];
  const name = `${d.kind}/${d.metadata && d.metadata.name}`;
  const spec = d.spec || {};
  const pod = (spec.template && spec.template.spec) || {};
  const psc = pod.securityContext || {};
  const cli = (pod.containers || []).filter((c) => path.basename(String((c.command || c.args || [])[0] || "")) === "chunkmill");
  if (cli.length === 0) return errs;
  if (pod.restartPolicy !== "Never") errs.push(`${name}: restartPolicy must be Never (got ${pod.restartPolicy}): a restarted chunkmill submit submits again`);
  if (spec.backoffLimit !== 0) errs.push(`${name}: backoffLimit must be 0 (got ${spec.backoffLimit}): a retry submits the job again`);
  if (pod.automountServiceAccountToken !== false) errs.push(`${name}: automountServiceAccountToken is not false`);
  for (const c of cli) {
    const cn = `${name} container ${c.name}`;
    const r = c.resources || {};
    for (const kind of ["requests", "limits"]) {
      for (const res of ["cpu", "memory"]) {
        if (!r[kind] || r[kind][res] === undefined) errs.push(`${cn}: resources.${kind}.${res} not set`);
      }
    }
    const sc = c.securityContext || {};
    const nonRoot = sc.runAsNonRoot !== undefined ? sc.runAsNonRoot : psc.runAsNonRoot;
    if (nonRoot !== true) errs.push(`${cn}: runAsNonRoot is not true`);
    if (sc.readOnlyRootFilesystem !== true) errs.push(`${cn}: readOnlyRootFilesystem is not true`);
    if (sc.allowPrivilegeEscalation !== false) errs.push(`${cn}: allowPrivilegeEscalation is not false`);
    if (!((sc.capabilities && sc.capabilities.drop) || []).includes("ALL")) errs.push(`${cn}: capabilities.drop does not include ALL`);
    const seccomp = (sc.seccompProfile || psc.seccompProfile || {}).type;
    if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") errs.push(`${cn}: seccompProfile is not RuntimeDefault`);
    for (const src of c.envFrom || []) {
      const ref = src.configMapRef;
      if (ref && !ref.optional && !ctx.configMaps.has(ref.name)) errs.push(`${cn}: envFrom ConfigMap ${ref.name} is not defined`);
    }
    const argv = [...(c.command || []), ...(c.args || [])].map(String);
    for (const a of argv) {
      if (/^--(nats-password|nats-token)(=|$)/.test(a)) errs.push(`${cn}: a NATS secret on the command line (${a.split("=")[0]})`);
    }
    for (const e of c.env || []) {
      if (/(PASSWORD|TOKEN)$/.test(e.name) && e.value !== undefined) errs.push(`${cn}: env ${e.name} is a literal value, not from a Secret`);
    }
    const user = settingOf(c, "nats-user", ctx);
    if (user !== "ops") errs.push(`${cn}: CHUNKMILL_NATS_USER is ${user === undefined ? "not set" : `"${user}"`}, not the ops user (the CLI's identity in deploy/nats/nats-server.conf)`);
    const pw = envSource(c, "CHUNKMILL_NATS_PASSWORD");
    if (!pw || !pw.secret) errs.push(`${cn}: CHUNKMILL_NATS_PASSWORD does not come from a Secret`);
    else if (!secretHasKey(ctx, pw.secret.name, pw.secret.key)) errs.push(`${cn}: CHUNKMILL_NATS_PASSWORD refers to missing Secret key ${pw.secret.name}/${pw.secret.key}`);
    const token = settingOf(c, "api-token-file", ctx);
    if (!token) errs.push(`${cn}: no API token (CHUNKMILL_API_TOKEN_FILE): the fetcher refuses job API writes without it`);
    else errs.push(...secretFileErrors(cn, c, pod, ctx, token, "the API token file"));
    const vols = new Map((pod.volumes || []).map((v) => [v.name, v]));
    for (const m of c.volumeMounts || []) if (!vols.has(m.name)) errs.push(`${cn}: volumeMount ${m.name} has no volume`);
  }
  return errs;
}

// The NATS server container: a config file (authorization) and every
// role's password from a Secret.
function natsServerErrors(cn, c, ctx) {
  const errs = [];
  const argv = [...(c.command || []), ...(c.args || [])].map(String);
  if (!argv.some((a) => a === "-c" || a === "--config" || a.startsWith("--config="))) errs.push(`${cn}: the NATS server runs without a config file (no authorization)`);
  for (const role of ["FETCHER", "MAPPER", "SAVER", "OPS"]) {
    const src = envSource(c, `CM_${role}_PASSWORD`);
    if (!src || !src.secret) errs.push(`${cn}: CM_${role}_PASSWORD does not come from a Secret`);
    else if (!secretHasKey(ctx, src.secret.name, src.secret.key)) errs.push(`${cn}: CM_${role}_PASSWORD refers to missing Secret key ${src.secret.name}/${src.secret.key}`);
  }
  return errs;
}

function portOfHttpAddr(addr) {
  const m = /(?:^|:)(\d+)$/.exec(String(addr));
  return m ? Number(m[1]) : NaN;
}

function labelsMatch(selector, labels) {
  if (!selector) return false;
  const ml = selector.matchLabels || {};
  for (const [k, v] of Object.entries(ml)) if (!labels || labels[k] !== v) return false;
  for (const ex of selector.matchExpressions || []) {
    const has = labels && Object.prototype.hasOwnProperty.call(labels, ex.key);
    const val = has ? labels[ex.key] : undefined;
    if (ex.operator === "In" && !(has && ex.values.includes(val))) return false;
    if (ex.operator === "NotIn" && has && ex.values.includes(val)) return false;
    if (ex.operator === "Exists" && !has) return false;
    if (ex.operator === "DoesNotExist" && has) return false;
  }
  return Object.keys(ml).length > 0 || (selector.matchExpressions || []).length > 0;
}

function checkProbe(kindName, c, probeName, probe, errs, want) {
  const where = `${kindName} container ${c.name}: ${probeName}`;
  if (!probe) { errs.push(`${where} missing`); return; }
  const hg = probe.httpGet;
  // Other software (an example database) may probe with a command or a TCP
  // connect; chunkmill's daemons (want set) must use their HTTP paths.
  if (!hg && want === null && probe.exec && (probe.exec.command || []).length > 0) return;
  if (!hg && want === null && probe.tcpSocket) {
    const tp = probe.tcpSocket.port;
    const ok = (c.ports || []).some((p) => (typeof tp === "string" ? p.name === tp : p.containerPort === tp));
    if (!ok) errs.push(`${where} port ${tp} is not a declared containerPort`);
    return;
  }
  if (!hg) { errs.push(`${where} is not an httpGet probe`); return; }
  const ports = c.ports || [];
  const port = typeof hg.port === "string"
    ? ports.find((p) => p.name === hg.port)
    : ports.find((p) => p.containerPort === hg.port);
  if (!port) errs.push(`${where} port ${hg.port} is not a declared containerPort`);
  if (!PROBE_PATHS.has(hg.path)) errs.push(`${where} path ${hg.path} is not one of /healthz, /readyz`);
  else if (want && hg.path !== want) errs.push(`${where} path ${hg.path} should be ${want}`);
  return port;
}

function policyErrors(docs) {
  // Returns Map(doc -> [errors]).
  const result = new Map(docs.map((d) => [d, []]));
  const ctx = {
    configMaps: new Map(docs.filter((d) => d.kind === "ConfigMap").map((d) => [d.metadata.name, d])),
    pvcs: new Set(docs.filter((d) => d.kind === "PersistentVolumeClaim").map((d) => d.metadata.name)),
    secrets: new Map(docs.filter((d) => d.kind === "Secret").map((d) => [d.metadata.name, d])),
    templates: new Set(docs.filter((d) => d.kind === "AnalysisTemplate").map((d) => d.metadata.name)),
  };
  const workloads = docs.filter((d) => WORKLOAD_KINDS.has(d.kind) && d.spec && d.spec.template);
  const scaled = new Map(); // workload name -> autoscaler doc
  for (const d of docs) {
    if (d.kind === "HorizontalPodAutoscaler" || d.kind === "ScaledObject") {
      const ref = d.spec && d.spec.scaleTargetRef;
      if (ref) scaled.set(ref.name, d);
    }
  }

  for (const w of workloads) {
    const errs = result.get(w);
    const name = `${w.kind}/${w.metadata.name}`;
    const tpl = w.spec.template;
    const pod = tpl.spec || {};
    const podLabels = (tpl.metadata && tpl.metadata.labels) || {};
    const psc = pod.securityContext || {};
    if (w.spec.selector && !labelsMatch(w.spec.selector, podLabels)) {
      errs.push(`${name}: selector does not match its pod template labels`);
    }
    const volumes = new Map((pod.volumes || []).map((v) => [v.name, v]));
    for (const t of w.spec.volumeClaimTemplates || []) volumes.set(t.metadata.name, t);
    for (const v of pod.volumes || []) {
      if (v.persistentVolumeClaim && !ctx.pvcs.has(v.persistentVolumeClaim.claimName)) {
        errs.push(`${name}: volume ${v.name} claims PVC ${v.persistentVolumeClaim.claimName}, which is not defined`);
      }
    }
    const daemons = new Set();
    let pgSaver = false;
    for (const c of pod.containers || []) {
      const cn = `${name} container ${c.name}`;
      const daemon = daemonOf(c);
      if (daemon) daemons.add(daemon);
      if (daemon === "saver" && savesToPostgres(c, ctx)) pgSaver = true;
      const ready = checkProbe(name, c, "readinessProbe", c.readinessProbe, errs, daemon ? "/readyz" : null);
      const live = checkProbe(name, c, "livenessProbe", c.livenessProbe, errs, daemon ? "/healthz" : null);
      if (c.startupProbe) checkProbe(name, c, "startupProbe", c.startupProbe, errs, null);
      // Resources.
      const r = c.resources || {};
      for (const kind of ["requests", "limits"]) {
        for (const res of ["cpu", "memory"]) {
          if (!r[kind] || r[kind][res] === undefined) errs.push(`${cn}: resources.${kind}.${res} not set`);
        }
      }
      // Security.
      const sc = c.securityContext || {};
      const nonRoot = sc.runAsNonRoot !== undefined ? sc.runAsNonRoot : psc.runAsNonRoot;
      if (nonRoot !== true) errs.push(`${cn}: runAsNonRoot is not true`);
      const uid = sc.runAsUser !== undefined ? sc.runAsUser : psc.runAsUser;
      if (uid === 0) errs.push(`${cn}: runAsUser is 0`);
      if (sc.readOnlyRootFilesystem !== true) errs.push(`${cn}: readOnlyRootFilesystem is not true`);
      if (sc.allowPrivilegeEscalation !== false) errs.push(`${cn}: allowPrivilegeEscalation is not false`);
      if (sc.privileged === true) errs.push(`${cn}: privileged`);
      const drop = (sc.capabilities && sc.capabilities.drop) || [];
      if (!drop.includes("ALL")) errs.push(`${cn}: capabilities.drop does not include ALL`);
      const seccomp = (sc.seccompProfile || psc.seccompProfile || {}).type;
      if (seccomp !== "RuntimeDefault" && seccomp !== "Localhost") errs.push(`${cn}: seccompProfile is not RuntimeDefault`);
      for (const m of c.volumeMounts || []) {
        if (!volumes.has(m.name)) errs.push(`${cn}: volumeMount ${m.name} has no volume`);
      }
      for (const src of c.envFrom || []) {
        const ref = src.configMapRef;
        if (ref && !ref.optional && !ctx.configMaps.has(ref.name)) {
          errs.push(`${cn}: envFrom ConfigMap ${ref.name} is not defined`);
        }
      }
      const envSeen = new Set();
      for (const e of c.env || []) {
        if (envSeen.has(e.name)) errs.push(`${cn}: env ${e.name} is set twice (the later one wins)`);
        envSeen.add(e.name);
        const ref = e.valueFrom && e.valueFrom.configMapKeyRef;
        if (ref && !ref.optional) {
          const cm = ctx.configMaps.get(ref.name);
          if (!cm || !cm.data || cm.data[ref.key] === undefined) errs.push(`${cn}: env ${e.name} refers to missing ConfigMap key ${ref.name}/${ref.key}`);
        }
      }
      if (/^nats(:|@|$)/.test(String(c.image || "").split("/").pop())) errs.push(...natsServerErrors(cn, c, ctx));
      if (!daemon) continue;
      errs.push(...credentialErrors(cn, daemon, c, pod, ctx));

      // chunkmill daemon specifics.
      const httpPort = portOfHttpAddr(settingOf(c, "http", ctx) || `:${DEFAULT_HTTP_PORT}`);
      for (const [pn, port] of [["readinessProbe", ready], ["livenessProbe", live]]) {
        if (port && port.containerPort !== httpPort) {
          errs.push(`${cn}: ${pn} targets port ${port.containerPort} but the daemon serves --http on ${httpPort}`);
        }
      }
      const drainText = settingOf(c, "drain-timeout", ctx);
      const drain = drainText === undefined ? DEFAULT_DRAIN_S : parseDurationSeconds(drainText);
      const grace = pod.terminationGracePeriodSeconds !== undefined ? pod.terminationGracePeriodSeconds : 30;
      if (Number.isNaN(drain)) errs.push(`${cn}: cannot parse drain timeout ${drainText}`);
      else if (!(grace > drain)) {
        errs.push(`${cn}: terminationGracePeriodSeconds ${grace} is not above the drain timeout ${drain}s`);
      }
      const envByName = new Map((c.env || []).map((e) => [e.name, e]));
      const fr = (n) => { const e = envByName.get(n); return e && e.valueFrom && e.valueFrom.fieldRef && e.valueFrom.fieldRef.fieldPath; };
      if (fr("CHUNKMILL_ID") !== "metadata.name") errs.push(`${cn}: CHUNKMILL_ID is not the pod name (downward API metadata.name)`);
      const vl = fr("CHUNKMILL_VERSION_LABEL");
      const vm = vl && /^metadata\.labels\['([^']+)'\]$/.exec(vl);
      if (!vm) errs.push(`${cn}: CHUNKMILL_VERSION_LABEL is not a pod label (downward API)`);
      else if (podLabels[vm[1]] === undefined) errs.push(`${cn}: CHUNKMILL_VERSION_LABEL reads label ${vm[1]}, which the pod template does not set`);
      if (sc.readOnlyRootFilesystem === true && !(c.volumeMounts || []).some((m) => m.mountPath === "/tmp")) {
        errs.push(`${cn}: read-only root filesystem without a writable /tmp`);
      }
    }

    // Stateful singletons: the fetcher (its ledger) and a saver on SQLite
    // (one writer per file). Savers on PostgreSQL are many at once: they
    // roll without loss of capacity and keep a disruption budget instead.
    if (pgSaver) {
      const strategy = (w.spec.strategy && w.spec.strategy.type) || "RollingUpdate";
      if (w.kind !== "Deployment" || strategy !== "RollingUpdate") errs.push(`${name}: savers on PostgreSQL must be a Deployment with strategy RollingUpdate (got ${w.kind}/${strategy})`);
      if (!docs.some((d) => d.kind === "PodDisruptionBudget" && labelsMatch(d.spec.selector, podLabels))) errs.push(`${name}: savers on PostgreSQL need a PodDisruptionBudget`);
      if ((pod.volumes || []).some((v) => v.persistentVolumeClaim)) errs.push(`${name}: savers on PostgreSQL must not claim a PVC (the results are in the database)`);
    }
    for (const d of ["fetcher", "saver"]) {
      if (!daemons.has(d) || (d === "saver" && pgSaver)) continue;
      const strategy = (w.spec.strategy && w.spec.strategy.type) || (w.kind === "Deployment" ? "RollingUpdate" : w.kind);
      if (w.kind !== "Deployment" || strategy !== "Recreate") errs.push(`${name}: the ${d} must be a Deployment with strategy Recreate (got ${w.kind}/${strategy})`);
      if (w.spec.replicas !== 1) errs.push(`${name}: the ${d} must have replicas: 1 (got ${w.spec.replicas})`);
      if (scaled.has(w.metadata.name)) errs.push(`${name}: the ${d} must not be autoscaled`);
    }
    if (scaled.has(w.metadata.name) && w.spec.replicas !== undefined) {
      errs.push(`${name}: autoscaled but sets spec.replicas (kubectl apply would fight the autoscaler)`);
    }
    if (daemons.has("mapper") && w.kind === "Deployment") {
      const ru = w.spec.strategy && w.spec.strategy.rollingUpdate;
      if (!w.spec.strategy || w.spec.strategy.type !== "RollingUpdate" || !ru || ru.maxSurge === undefined || ru.maxUnavailable === undefined) {
        errs.push(`${name}: mappers need an explicit RollingUpdate with maxSurge and maxUnavailable`);
      }
    }
    if (w.kind === "Rollout") {
      const canary = w.spec.strategy && w.spec.strategy.canary;
      if (!canary) errs.push(`${name}: Rollout without a canary strategy`);
      else {
        const steps = canary.steps || [];
        for (const k of ["setWeight", "pause", "analysis"]) {
          if (!steps.some((s) => s[k] !== undefined)) errs.push(`${name}: canary has no ${k} step`);
        }
        const refs = [...steps.filter((s) => s.analysis).map((s) => s.analysis), ...(canary.analysis ? [canary.analysis] : [])];
        for (const a of refs) {
          for (const t of a.templates || []) {
            if (!ctx.templates.has(t.templateName)) errs.push(`${name}: analysis template ${t.templateName} is not defined`);
          }
        }
      }
    }
  }

  // Services, PDBs, autoscalers must point at something real.
  const podTemplates = workloads.map((w) => w.spec.template);
  for (const d of docs) {
    const errs = result.get(d);
    const name = `${d.kind}/${d.metadata && d.metadata.name}`;
    if (d.kind === "Service" && d.spec && d.spec.selector) {
      const matches = podTemplates.filter((t) => labelsMatch({ matchLabels: d.spec.selector }, t.metadata && t.metadata.labels));
      if (!matches.length) errs.push(`${name}: selector matches no pod template`);
      for (const p of d.spec.ports || []) {
        if (typeof p.targetPort !== "string") continue;
        const ok = matches.some((t) => (t.spec.containers || []).some((c) => (c.ports || []).some((cp) => cp.name === p.targetPort)));
        if (matches.length && !ok) errs.push(`${name}: targetPort ${p.targetPort} is not a named port of the selected pods`);
      }
    }
    if (d.kind === "Job") errs.push(...cliJobErrors(d, ctx));
    if (d.kind === "PodDisruptionBudget") {
      if (!podTemplates.some((t) => labelsMatch(d.spec.selector, t.metadata && t.metadata.labels))) errs.push(`${name}: selector matches no pod template`);
    }
    if (d.kind === "HorizontalPodAutoscaler" || d.kind === "ScaledObject") {
      const ref = d.spec.scaleTargetRef || {};
      const target = workloads.find((w) => w.metadata.name === ref.name && (!ref.kind || ref.kind === w.kind));
      if (!target) errs.push(`${name}: scaleTargetRef ${ref.kind || ""}/${ref.name} is not defined`);
    }
    if (d.kind === "AnalysisTemplate") {
      const declared = new Set(((d.spec && d.spec.args) || []).map((a) => a.name));
      const text = JSON.stringify(d.spec.metrics || []);
      for (const m of text.matchAll(/\{\{\s*args\.([A-Za-z0-9_-]+)\s*\}\}/g)) {
        if (!declared.has(m[1])) errs.push(`${name}: uses {{args.${m[1]}}} but does not declare it`);
      }
    }
  }
  return result;
}

// ---- 5. NATS cluster ---------------------------------------------------------
const NATS_REPLICAS = 3;

function isNatsContainer(c) {
  return /(^|\/)nats(:|@|$)/.test(String(c.image || ""));
}

// The nats-server configuration text a container runs with: the file named
// by --config/-c, read from the ConfigMap (or Secret) mounted at its
// directory.
function natsConfigOf(c, pod, ctx) {
  const argv = [...(c.command || []), ...(c.args || [])];
  let file = null;
  for (let i = 0; i < argv.length; i++) {
    if ((argv[i] === "--config" || argv[i] === "-c") && i + 1 < argv.length) file = argv[i + 1];
    else if (String(argv[i]).startsWith("--config=")) file = String(argv[i]).slice(9);
  }
  if (!file) return null;
  const volumes = new Map((pod.volumes || []).map((v) => [v.name, v]));
  for (const m of c.volumeMounts || []) {
    const dir = m.mountPath.replace(/\/$/, "");
    if (!file.startsWith(`${dir}/`)) continue;
    const v = volumes.get(m.name);
    const key = file.slice(dir.length + 1);
    const cm = v && v.configMap && ctx.configMaps.get(v.configMap.name);
    if (cm && cm.data && cm.data[key] !== undefined) return cm.data[key];
    // The configuration may live in a Secret (it can hold passwords).
    const sec = v && v.secret && ctx.secrets.get(v.secret.secretName);
    if (sec && sec.stringData && sec.stringData[key] !== undefined) return sec.stringData[key];
    if (sec && sec.data && sec.data[key] !== undefined) return Buffer.from(sec.data[key], "base64").toString("utf8");
  }
  return null;
}

function natsClusterErrors(docs) {
  const errs = [];
  const byKind = (k) => new Map(docs.filter((d) => d.kind === k).map((d) => [d.metadata.name, d]));
  const ctx = { configMaps: byKind("ConfigMap"), secrets: byKind("Secret") };
  const workloads = docs.filter((d) => WORKLOAD_KINDS.has(d.kind) && d.spec && d.spec.template);
  const nats = workloads.filter((w) => ((w.spec.template.spec || {}).containers || []).some(isNatsContainer));
  if (nats.length !== 1) return [`expected one NATS workload, found ${nats.length}`];
  const w = nats[0];
  const name = `${w.kind}/${w.metadata.name}`;
  const tpl = w.spec.template;
  const pod = tpl.spec || {};
  const labels = (tpl.metadata && tpl.metadata.labels) || {};
  if (w.kind !== "StatefulSet") errs.push(`${name}: NATS must be a StatefulSet (stable names for the routes)`);
  if (w.spec.replicas !== NATS_REPLICAS) errs.push(`${name}: replicas must be ${NATS_REPLICAS} (got ${w.spec.replicas})`);
  // Headless Service behind the pods' stable names.
  const svcs = docs.filter((d) => d.kind === "Service" && d.spec && d.spec.selector && labelsMatch({ matchLabels: d.spec.selector }, labels));
  const headless = svcs.find((d) => d.metadata.name === w.spec.serviceName);
  if (!headless) errs.push(`${name}: serviceName ${w.spec.serviceName} is not a Service selecting the NATS pods`);
  else {
    if (headless.spec.clusterIP !== "None") errs.push(`Service/${headless.metadata.name}: not headless (clusterIP: None)`);
    if (!(headless.spec.ports || []).some((p) => p.port === 6222 || p.name === "cluster")) errs.push(`Service/${headless.metadata.name}: no cluster (route) port`);
  }
  // Routes to every pod by its stable name.
  const c = (pod.containers || []).find(isNatsContainer);
  const conf = c && natsConfigOf(c, pod, ctx);
  if (!conf) errs.push(`${name}: nats-server does not run with a --config file from a ConfigMap or Secret`);
  else {
    const cl = /cluster\s*\{([\s\S]*)\}/.exec(conf);
    if (!cl) errs.push(`${name}: nats.conf has no cluster block`);
    else {
      if (!/\bname\s*[:=]/.test(cl[1])) errs.push(`${name}: the cluster block has no name`);
      for (let i = 0; i < NATS_REPLICAS; i++) {
        const host = `${w.metadata.name}-${i}.${w.spec.serviceName}`;
        if (!new RegExp(`nats-route://${host.replace(/\./g, "\\.")}(\\.|:)`).test(cl[1])) errs.push(`${name}: no cluster route to ${host}`);
      }
    }
  }
  // PDB.
  const pdb = docs.find((d) => d.kind === "PodDisruptionBudget" && labelsMatch(d.spec.selector, labels));
  if (!pdb) errs.push(`${name}: no PodDisruptionBudget selects the NATS pods`);
  else if (pdb.spec.minAvailable !== NATS_REPLICAS - 1) errs.push(`PodDisruptionBudget/${pdb.metadata.name}: minAvailable must be ${NATS_REPLICAS - 1} (got ${pdb.spec.minAvailable})`);
  // Anti-affinity between the NATS pods.
  const aa = (pod.affinity && pod.affinity.podAntiAffinity) || {};
  const terms = [...(aa.requiredDuringSchedulingIgnoredDuringExecution || []),
    ...(aa.preferredDuringSchedulingIgnoredDuringExecution || []).map((p) => p.podAffinityTerm)];
  if (!terms.some((t) => t && t.topologyKey && labelsMatch(t.labelSelector, labels))) errs.push(`${name}: no pod anti-affinity between the NATS pods`);
  if (c && (!c.readinessProbe || !c.livenessProbe)) errs.push(`${name}: nats-server needs readiness and liveness probes`);
  // The daemons use a Service of the NATS pods.
  const svcNames = new Set(svcs.map((d) => d.metadata.name));
  for (const d of workloads) {
    for (const dc of (d.spec.template.spec || {}).containers || []) {
      if (!daemonOf(dc)) continue;
      const url = settingOf(dc, "nats-url", ctx);
      for (const u of String(url || "").split(",")) {
        const m = /^\s*(?:nats|tls):\/\/(?:[^@/]*@)?([^:/.]+)/.exec(u);
        if (!m || !svcNames.has(m[1])) errs.push(`${d.kind}/${d.metadata.name} container ${dc.name}: CHUNKMILL_NATS_URL ${url} is not a Service of the NATS pods`);
      }
    }
  }
  return errs;
}

// Broken copies of a rendering, each of which the cluster check must reject.
function natsClusterMutations(docs) {
  const copy = () => JSON.parse(JSON.stringify(docs));
  const natsOf = (ds) => ds.find((d) => WORKLOAD_KINDS.has(d.kind) && ((d.spec.template.spec || {}).containers || []).some(isNatsContainer));
  return [
    ["a single NATS replica", "replicas must be 3", (ds) => { natsOf(ds).spec.replicas = 1; }],
    ["no PodDisruptionBudget", "no PodDisruptionBudget", (ds) => ds.filter((d) => d.kind !== "PodDisruptionBudget")],
    ["no anti-affinity", "no pod anti-affinity", (ds) => { delete natsOf(ds).spec.template.spec.affinity; }],
    ["no routes", "no cluster route to", (ds) => {
      for (const d of ds) if (d.kind === "ConfigMap" && d.data) for (const k of Object.keys(d.data)) d.data[k] = d.data[k].replace(/nats-route:\/\/[^\s\]]+/g, "");
    }],
    ["a Deployment", "must be a StatefulSet", (ds) => { natsOf(ds).kind = "Deployment"; }],
  ].map(([what, expect, mutate]) => {
    const ds = copy();
    const out = mutate(ds);
    return [what, expect, Array.isArray(out) ? out : ds];
  });
}

// ---- running -------------------------------------------------------------
// ---- 6. the app9 NATS config is the example config plus its additions -------
// k8s/components/app9/nats-server.conf cannot include deploy/nats/nats-server.conf
// and add to it: nats-server's `include` inserts a file's keys, and a second
// `accounts` block replaces the included one (users and all), so a role's
// permission lists cannot be extended that way. The copy is checked instead:
// parsed, it must equal the example config except for what its header
// documents:
//   - each role may also be allowed the original example's subjects
//     (APP9_SUBJECTS) in its publish/subscribe allow lists;
//   - one more user, `app9`, without password, allowed only those subjects
//     to publish and subscribe;
//   - no_auth_user: app9.
const APP9_SUBJECTS = ["mapper_status", "mapper_data", "saver_data", "processed_data"];

// A parser for the nats-server configuration format as these files use it:
// maps ({...}, or the top level), arrays, quoted and bare values, `key: v`,
// `key = v` and `key v`, `#` and `//` comments, `,`/`;`/newline separators.
// Throws an Error naming the file and line on anything else.
function parseNatsConf(text, file) {
  let i = 0;
  const fail = (what) => {
    throw new Error(`${file}: ${what} at line ${text.slice(0, i).split("\n").length}`);
  };
  const skip = () => {
    while (i < text.length) {
      const c = text[i];
      if (c === "#" || (c === "/" && text[i + 1] === "/")) {
        while (i < text.length && text[i] !== "\n") i++;
      } else if (" \t\r\n,;".includes(c)) {
        i++;
      } else {
        return;
      }
    }
  };
  const value = () => {
    const c = text[i];
    if (c === "{") {
      i++;
      const m = entries("}");
      i++;
      return m;
    }
    if (c === "[") {
      i++;
      const a = [];
      for (;;) {
        skip();
        if (i >= text.length) fail("unterminated array");
        if (text[i] === "]") { i++; return a; }
        a.push(value());
      }
    }
    if (c === '"' || c === "'") {
      const j = text.indexOf(c, i + 1);
      if (j < 0) fail("unterminated string");
      const s = text.slice(i + 1, j);
      i = j + 1;
      return s;
    }
    const m = /^[^\s,;\]}#]+/.exec(text.slice(i));
    if (!m) fail("a value expected");
    i += m[0].length;
    return m[0];
  };
  const entries = (close) => {
    const m = {};
    for (;;) {
      skip();
      if (i >= text.length) {
        if (close) fail(`missing "${close}"`);
        return m;
      }
      if (text[i] === close) return m;
      const k = /^[^\s:={}[\],;#"']+/.exec(text.slice(i));
      if (!k) fail("a key expected");
      i += k[0].length;
      while (text[i] === " " || text[i] === "\t") i++;
      if (text[i] === ":" || text[i] === "=") i++;
      while (text[i] === " " || text[i] === "\t") i++;
      const key = k[0];
      if (Object.prototype.hasOwnProperty.call(m, key)) fail(`"${k[0]}" given twice`);
      m[key] = value();
    }
  };
  return entries(null);
}

const isObj = (v) => v !== null && typeof v === "object" && !Array.isArray(v);
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// The allow list of a publish/subscribe permission, in either form
// (`publish: [...]` or `publish { allow: [...] }`).
function allowOf(perm) {
  if (Array.isArray(perm)) return perm;
  if (typeof perm === "string") return [perm];
  if (isObj(perm)) return perm.allow === undefined ? [] : [].concat(perm.allow);
  return [];
}

// A user block without the app9 subjects in its allow lists.
function withoutApp9Subjects(user) {
  const u = JSON.parse(JSON.stringify(user));
  const p = u.permissions;
  if (!isObj(p)) return u;
  for (const dir of ["publish", "subscribe"]) {
    if (Array.isArray(p[dir])) p[dir] = p[dir].filter((s) => !APP9_SUBJECTS.includes(s));
    else if (isObj(p[dir]) && Array.isArray(p[dir].allow))
      p[dir].allow = p[dir].allow.filter((s) => !APP9_SUBJECTS.includes(s));
  }
  return u;
}

// Errors of the app9 config text against the example config text.
function natsApp9Errors(exampleText, app9Text) {
  const errs = [];
  let ex, a9;
  try {
    ex = parseNatsConf(exampleText, "deploy/nats/nats-server.conf");
    a9 = parseNatsConf(app9Text, "k8s/components/app9/nats-server.conf");
  } catch (e) {
    return [e.message];
  }
  for (const k of Object.keys(ex)) {
    if (k === "accounts") continue;
    if (!(k in a9)) errs.push(`top level: "${k}" of the example config is missing`);
    else if (!same(ex[k], a9[k])) errs.push(`top level: "${k}" differs from the example config: ${JSON.stringify(a9[k])} instead of ${JSON.stringify(ex[k])}`);
  }
  for (const k of Object.keys(a9)) {
    if (k in ex || k === "accounts") continue;
    if (k === "no_auth_user") {
      if (a9[k] !== "app9") errs.push(`no_auth_user is "${a9[k]}", not app9`);
    } else {
      errs.push(`top level: "${k}" is not in the example config nor a documented addition`);
    }
  }
  const exAcc = isObj(ex.accounts) ? ex.accounts : {};
  const a9Acc = isObj(a9.accounts) ? a9.accounts : {};
  if (!same(Object.keys(exAcc), Object.keys(a9Acc)))
    errs.push(`accounts: ${JSON.stringify(Object.keys(a9Acc))} instead of ${JSON.stringify(Object.keys(exAcc))}`);
  for (const name of Object.keys(exAcc)) {
    const e = exAcc[name], g = a9Acc[name];
    if (!isObj(g)) continue;
    for (const k of new Set([...Object.keys(e), ...Object.keys(g)])) {
      if (k !== "users" && !same(e[k], g[k])) errs.push(`account ${name}: "${k}" differs from the example config`);
    }
    const eu = new Map([].concat(e.users || []).map((u) => [u.user, u]));
    const gu = new Map([].concat(g.users || []).map((u) => [u.user, u]));
    for (const [user, u] of eu) {
      if (!gu.has(user)) { errs.push(`account ${name}: user ${user} of the example config is missing`); continue; }
      const got = withoutApp9Subjects(gu.get(user));
      const want = withoutApp9Subjects(u);
      if (!same(got, want))
        errs.push(`account ${name}: user ${user} differs from the example config beyond the app9 subjects: ${JSON.stringify(got)} instead of ${JSON.stringify(want)}`);
    }
    for (const [user, u] of gu) {
      if (eu.has(user)) continue;
      if (user !== "app9") { errs.push(`account ${name}: user ${user} is not in the example config nor a documented addition`); continue; }
      for (const k of Object.keys(u)) {
        if (k !== "user" && k !== "permissions") errs.push(`account ${name}: user app9 has "${k}" (only permissions are documented)`);
      }
      const p = isObj(u.permissions) ? u.permissions : {};
      for (const k of Object.keys(p)) {
        if (k !== "publish" && k !== "subscribe") errs.push(`account ${name}: user app9 has permission "${k}"`);
      }
      for (const dir of ["publish", "subscribe"]) {
        const allow = allowOf(p[dir]);
        if (allow.length === 0) errs.push(`account ${name}: user app9 has no ${dir} allow list (it would be allowed everything)`);
        const extra = allow.filter((s) => !APP9_SUBJECTS.includes(s));
        if (extra.length) errs.push(`account ${name}: user app9 may ${dir} ${JSON.stringify(extra)}, not only the original's subjects`);
      }
    }
  }
  return errs;
}

// Broken copies of the two texts, each with the error it must cause.
function natsApp9Mutations(exampleText, app9Text) {
  const sub = (t, a, b) => {
    if (!t.includes(a)) throw new Error(`mutation: "${a}" not found`);
    return t.replace(a, b);
  };
  return [
    ["the example config's fetcher allowed one more subject, the copy not updated", "user fetcher differs",
      sub(exampleText, '"chunkmill.dead", "chunkmill.heartbeat"]', '"chunkmill.dead", "chunkmill.heartbeat", "chunkmill.extra"]'), app9Text],
    ["the example config's max_payload changed, the copy not updated", '"max_payload" differs',
      sub(exampleText, "max_payload: 1MB", "max_payload: 2MB"), app9Text],
    ["a new user in the example config", "user newrole of the example config is missing",
      sub(exampleText, "      {\n        user: ops", "      {user: newrole, password: $X}\n      {\n        user: ops"), app9Text],
    ["the copy's mapper without chunkmill.save", "user mapper differs",
      exampleText, sub(app9Text, '"chunkmill.save", "mapper_status", "saver_data"]', '"mapper_status", "saver_data"]')],
    ["the copy's mapper allowed every chunkmill subject", "user mapper differs",
      exampleText, sub(app9Text, '"chunkmill.chunk.>", "chunkmill.heartbeat", "_INBOX.>",', '"chunkmill.>", "chunkmill.chunk.>", "chunkmill.heartbeat", "_INBOX.>",')],
    ["the copy's user app9 allowed a chunkmill subject", "user app9 may publish",
      exampleText, sub(app9Text, 'allow: ["mapper_status", "mapper_data", "saver_data", "processed_data"]', 'allow: ["chunkmill.save", "mapper_status", "mapper_data", "saver_data", "processed_data"]')],
    ["no_auth_user naming another user", "no_auth_user is",
      exampleText, sub(app9Text, "no_auth_user: app9", "no_auth_user: saver")],
    ["the copy with the example's ops user removed", "user ops of the example config is missing",
      exampleText, app9Text.replace(/ {6}\{\n {8}user: ops[\s\S]*?\n {6}\}\n/, "")],
  ];
}

let passed = 0;
let failed = 0;
function report(ok, title, details) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? "ok" : "not ok"} ${passed + failed} - ${title}`);
  if ((!ok || VERBOSE) && details && details.length) {
    for (const d of details.slice(0, 40)) console.log(`    # ${d}`);
    if (details.length > 40) console.log(`    # ... ${details.length - 40} more`);
  }
}

function docName(d) {
  return `${d && d.kind}/${d && d.metadata && d.metadata.name}`;
}

function parseDocs(text, origin) {
  return YAML.parseAllDocuments(text).map((doc) => {
    if (doc.errors && doc.errors.length) throw new Error(`${origin}: ${doc.errors[0].message}`);
    return doc.toJSON();
  }).filter((d) => d !== null && d !== undefined);
}

function checkAll(docs) {
  // Returns {schema, strict, policy}: Map(doc -> [errors]) each.
  const schema = new Map(docs.map((d) => [d, schemaErrors(d)]));
  const strict = new Map(docs.map((d) => [d, strictErrors(d)]));
  const policy = policyErrors(docs);
  return { schema, strict, policy };
}

function collect(map) {
  const out = [];
  for (const [d, errs] of map) for (const e of errs) out.push(`${docName(d)}: ${e}`);
  return out;
}

// k8s/ copied into a temporary directory with generated secrets (the real
// ones are never in the repository); removed at exit.
let RENDER_ROOT = null;
function renderRoot() {
  if (RENDER_ROOT) return RENDER_ROOT;
  const os = require("os");
  RENDER_ROOT = fs.mkdtempSync(path.join(os.tmpdir(), "cm-k8s-check-"));
  process.on("exit", () => fs.rmSync(RENDER_ROOT, { recursive: true, force: true }));
  fs.cpSync(path.join(REPO, "k8s"), path.join(RENDER_ROOT, "k8s"), {
    recursive: true,
    filter: (src) => !src.startsWith(path.join(REPO, "k8s", "base", "secrets")),
  });
  execFileSync(path.join(REPO, "scripts", "gen-secrets"), [path.join(RENDER_ROOT, "k8s", "base", "secrets")],
    { stdio: ["ignore", "ignore", "inherit"] });
  return RENDER_ROOT;
}

function renderTargets() {
  const k8s = path.join(renderRoot(), "k8s");
  const targets = [path.join(k8s, "base")];
  const ov = path.join(k8s, "overlays");
  if (fs.existsSync(ov)) {
    for (const n of fs.readdirSync(ov).sort()) {
      if (fs.existsSync(path.join(ov, n, "kustomization.yaml"))) targets.push(path.join(ov, n));
    }
  }
  return targets;
}

function main() {
  const kinds = new Set();
  let baseDocs = null;
  for (const dir of renderTargets()) {
    const rel = path.relative(renderRoot(), dir);
    let docs;
    try {
      const out = execFileSync("kubectl", ["kustomize", dir], { encoding: "utf8", stdio: ["ignore", "pipe", "pipe"] });
      docs = parseDocs(out, rel);
      report(docs.length > 0, `${rel}: renders with kubectl kustomize (${docs.length} objects)`);
    } catch (e) {
      report(false, `${rel}: renders with kubectl kustomize`, [String(e.stderr || e.message).trim()]);
      continue;
    }
    docs.forEach((d) => kinds.add(`${d.apiVersion} ${d.kind}`));
    const r = checkAll(docs);
    report(collect(r.schema).length === 0, `${rel}: every object validates against its schema`, collect(r.schema));
    report(collect(r.strict).length === 0, `${rel}: no unknown fields (strict pass)`, collect(r.strict));
    report(collect(r.policy).length === 0, `${rel}: policy`, collect(r.policy));
    const ne = natsClusterErrors(docs);
    report(ne.length === 0, `${rel}: NATS runs as a ${NATS_REPLICAS}-node cluster (StatefulSet, headless Service, routes, PDB, anti-affinity)`, ne);
    if (rel === path.join("k8s", "base")) baseDocs = docs;
  }
  // k8s/examples (plain manifests applied next to k8s/base): each file
  // validates and passes the policy together with k8s/base's objects (the
  // ConfigMaps and Secrets it refers to), in the namespace chunkmill.
  const exDir = path.join(REPO, "k8s", "examples");
  if (baseDocs && fs.existsSync(exDir)) {
    for (const n of fs.readdirSync(exDir).filter((f) => /\.ya?ml$/.test(f)).sort()) {
      const rel = path.join("k8s", "examples", n);
      let docs;
      try {
        docs = parseDocs(fs.readFileSync(path.join(exDir, n), "utf8"), rel);
      } catch (e) {
        report(false, `${rel}: parses`, [e.message]);
        continue;
      }
      docs.forEach((d) => kinds.add(`${d.apiVersion} ${d.kind}`));
      const r = checkAll(docs.concat(baseDocs));
      const only = (m) => new Map([...m].filter(([d]) => docs.includes(d)));
      const ns = docs.filter((d) => !d.metadata || d.metadata.namespace !== "chunkmill").map((d) => `${docName(d)}: namespace is not chunkmill`);
      report(docs.length > 0 && collect(only(r.schema)).length === 0, `${rel}: every object validates against its schema (${docs.length} objects)`, collect(only(r.schema)));
      report(collect(only(r.strict)).length === 0, `${rel}: no unknown fields (strict pass)`, collect(only(r.strict)));
      report(collect(only(r.policy)).length === 0 && ns.length === 0, `${rel}: policy (with k8s/base)`, collect(only(r.policy)).concat(ns));
    }
  }
  // The cluster check can fail.
  if (baseDocs) {
    for (const [what, expect, ds] of natsClusterMutations(baseDocs)) {
      const errs = natsClusterErrors(ds);
      report(errs.some((e) => e.includes(expect)), `NATS cluster check rejects k8s/base with ${what} (${expect})`, errs);
    }
  }
  // The NATS config the cluster runs is the example config, as shipped.
  {
    const a = fs.readFileSync(path.join(REPO, "k8s", "base", "nats-server.conf"), "utf8");
    const b = fs.readFileSync(path.join(REPO, "deploy", "nats", "nats-server.conf"), "utf8");
    report(a === b, "k8s/base/nats-server.conf is deploy/nats/nats-server.conf",
      a === b ? [] : ["the two differ: cp deploy/nats/nats-server.conf k8s/base/nats-server.conf"]);
  }
  // The app9 component's NATS config is the example config plus the
  // documented additions, and the check can fail.
  {
    const ex = fs.readFileSync(path.join(REPO, "deploy", "nats", "nats-server.conf"), "utf8");
    const a9 = fs.readFileSync(path.join(REPO, "k8s", "components", "app9", "nats-server.conf"), "utf8");
    const errs = natsApp9Errors(ex, a9);
    report(errs.length === 0, "k8s/components/app9/nats-server.conf is deploy/nats/nats-server.conf plus the app9 additions", errs);
    let muts = [];
    try {
      muts = natsApp9Mutations(ex, a9);
    } catch (e) {
      report(false, "app9 NATS config check: broken copies built", [e.message]);
    }
    for (const [what, expect, e2, a2] of muts) {
      const es = natsApp9Errors(e2, a2);
      report(es.some((m) => m.includes(expect)), `app9 NATS config check rejects ${what} (${expect})`, es);
    }
  }
  // Every kind the issue asks for is present somewhere.
  const want = ["v1 Namespace", "v1 ConfigMap", "v1 Secret", "v1 Service", "v1 PersistentVolumeClaim", "apps/v1 Deployment",
    "policy/v1 PodDisruptionBudget", "networking.k8s.io/v1 NetworkPolicy", "apps/v1 StatefulSet", "autoscaling/v2 HorizontalPodAutoscaler",
    "keda.sh/v1alpha1 ScaledObject", "argoproj.io/v1alpha1 Rollout", "argoproj.io/v1alpha1 AnalysisTemplate",
    "monitoring.coreos.com/v1 ServiceMonitor", "monitoring.coreos.com/v1 PrometheusRule"];
  const missing = want.filter((k) => !kinds.has(k));
  report(missing.length === 0, "the rendered outputs cover every required kind", missing.map((k) => `missing ${k}`));

  // The checker can fail: every object in testdata/broken.yaml is broken on
  // purpose and names the error it must cause (annotation
  // chunkmill.test/expect, "stage: substring"); objects marked
  // "none" are controls that must pass.
  const brokenFile = path.join(__dirname, "testdata", "broken.yaml");
  const docs = parseDocs(fs.readFileSync(brokenFile, "utf8"), brokenFile);
  const r = checkAll(docs);
  for (const d of docs) {
    const expect = d.metadata && d.metadata.annotations && d.metadata.annotations["chunkmill.test/expect"];
    if (expect === undefined) continue;
    const all = { schema: r.schema.get(d), strict: r.strict.get(d), policy: r.policy.get(d) };
    const flat = Object.entries(all).flatMap(([k, es]) => es.map((e) => `${k}: ${e}`));
    if (expect === "none") {
      report(flat.length === 0, `testdata: ${docName(d)} (control) passes every check`, flat);
      continue;
    }
    const m = /^(schema|strict|policy):\s*(.+)$/.exec(expect);
    if (!m) { report(false, `testdata: ${docName(d)} has a malformed expectation "${expect}"`); continue; }
    const hit = all[m[1]].some((e) => e.includes(m[2]));
    report(hit, `testdata: ${docName(d)} is rejected by the ${m[1]} check (${m[2]})`, hit ? flat : [`got: ${flat.join(" | ") || "no errors"}`]);
  }

  console.log(`k8s: ${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

main();
