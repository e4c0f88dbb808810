#!/usr/bin/env node
// tests/k8s/check-compose.js - NATS authorization in docker-compose.yml, as
// rendered by `docker-compose config` (read from the file given, or stdin):
//   - the nats service runs a config file (deploy/nats/nats-server.conf) and
//     gets every role's password as a compose secret;
//   - each daemon connects as its role's user (CHUNKMILL_NATS_USER) with
//     its own role's password from a secret (mounted as nats_password), no
//     literal password or token in its environment or command;
//   - the fetcher and the saver read the lease key from a secret, the
//     mapper gets none;
//   - every secret is a file under deploy/secrets/ (made by
//     scripts/gen-secrets, not committed);
//   - the fetcher runs --serve with the job API token from a secret; the
//     `cli` service (a profile: `up` never starts it) runs the chunkmill CLI
//     as the NATS user ops with the same token, and holds no lease key.
// Then the same checks over broken variants, each of which must be rejected.
// Prints `ok`/`not ok` lines and `compose: N passed, M failed`.
"use strict";

const fs = require("fs");
const YAML = require("yaml");

const ROLES = ["fetcher", "mapper", "saver"];

function secretsOf(svc) {
  // short form "name" or long form {source, target}
  return (svc.secrets || []).map((s) => (typeof s === "string" ? { source: s, target: s } : { source: s.source, target: s.target || s.source }));
}

function roleOf(svc) {
  const cmd = Array.isArray(svc.command) ? svc.command : String(svc.command || "").split(/\s+/);
  return ROLES.includes(cmd[0]) ? cmd[0] : null;
}

function composeErrors(doc) {
  const errs = [];
  const services = doc.services || {};
  const topSecrets = doc.secrets || {};
  for (const [name, s] of Object.entries(topSecrets)) {
    if (!s || typeof s.file !== "string" || !/\/deploy\/secrets\/[^/]+$/.test(s.file)) errs.push(`secret ${name} is not a file under deploy/secrets/`);
  }
  const nats = services.nats;
  if (!nats) errs.push("no nats service");
  else {
    const text = JSON.stringify([nats.entrypoint, nats.command]);
    if (!/-c\b|--config/.test(text)) errs.push("nats: runs without a config file (no authorization)");
    const vols = JSON.stringify(nats.volumes || []);
    if (!vols.includes("deploy/nats/nats-server.conf")) errs.push("nats: deploy/nats/nats-server.conf is not mounted");
    const have = new Set(secretsOf(nats).map((x) => x.source));
    for (const r of ["fetcher", "mapper", "saver", "ops"]) {
      if (!have.has(`${r}_password`)) errs.push(`nats: no ${r}_password secret`);
      if (!text.includes(`CM_${r.toUpperCase()}_PASSWORD`)) errs.push(`nats: CM_${r.toUpperCase()}_PASSWORD is not set from its secret`);
    }
  }
  let daemons = 0;
  for (const [name, svc] of Object.entries(services)) {
    const role = roleOf(svc);
    if (!role) continue;
    daemons++;
    const env = svc.environment || {};
    const entries = Array.isArray(env) ? env.map((e) => String(e).split("=")) : Object.entries(env);
    for (const [k, v] of entries) {
      if (/(PASSWORD|TOKEN)$/.test(k) && v !== undefined && v !== null && v !== "") errs.push(`${name}: ${k} is a literal value in the compose file`);
    }
    const argv = [...(Array.isArray(svc.command) ? svc.command : []), ...(Array.isArray(svc.entrypoint) ? svc.entrypoint : [])].map(String);
    if (argv.some((a) => /^--nats-(password|token)/.test(a))) errs.push(`${name}: a NATS secret on the command line`);
    const envMap = new Map(entries);
    if (envMap.get("CHUNKMILL_NATS_USER") !== role) errs.push(`${name}: CHUNKMILL_NATS_USER is not "${role}"`);
    const sec = secretsOf(svc);
    const pw = sec.find((x) => x.target === "nats_password");
    if (!pw) errs.push(`${name}: no nats_password secret`);
    else if (pw.source !== `${role}_password`) errs.push(`${name}: nats_password is ${pw.source}, not ${role}_password`);
    if (!JSON.stringify(svc.entrypoint || "").includes("/run/secrets/nats_password")) errs.push(`${name}: CHUNKMILL_NATS_PASSWORD is not read from /run/secrets/nats_password`);
    const lease = sec.find((x) => x.source === "lease_key");
    if (role === "mapper") {
      if (lease) errs.push(`${name}: a mapper must not hold the lease key`);
    } else {
      if (!lease) errs.push(`${name}: no lease_key secret: leases would not be authenticated`);
      else if (envMap.get("CHUNKMILL_LEASE_KEY_FILE") !== `/run/secrets/${lease.target}`) errs.push(`${name}: CHUNKMILL_LEASE_KEY_FILE is not /run/secrets/${lease.target}`);
    }
    for (const x of sec) if (!topSecrets[x.source]) errs.push(`${name}: secret ${x.source} is not defined`);
  }
  if (daemons < 3) errs.push(`only ${daemons} daemon services found`);
  errs.push(...jobServiceErrors(services, topSecrets));
  return errs;
}

// The job service: the fetcher runs --serve with the API token from a
// secret; a `cli` service (profile, so `up` never starts it) runs the
// chunkmill CLI as the NATS user ops with ops_password and the same token.
function jobServiceErrors(services, topSecrets) {
  const errs = [];
  const tokenFile = (svc, name) => {
    const env = svc.environment || {};
    const entries = Array.isArray(env) ? env.map((e) => String(e).split("=")) : Object.entries(env);
    const file = new Map(entries).get("CHUNKMILL_API_TOKEN_FILE");
    const tok = secretsOf(svc).find((x) => x.source === "api_token");
    if (!tok) errs.push(`${name}: no api_token secret`);
    else if (file !== `/run/secrets/${tok.target}`) errs.push(`${name}: CHUNKMILL_API_TOKEN_FILE is not /run/secrets/${tok.target}`);
    if (tok && !topSecrets[tok.source]) errs.push(`${name}: secret ${tok.source} is not defined`);
  };
  const fetcher = services.fetcher;
  if (fetcher) {
    const cmd = Array.isArray(fetcher.command) ? fetcher.command : [];
    if (!cmd.includes("--serve")) errs.push("fetcher: does not run --serve (the job service)");
    tokenFile(fetcher, "fetcher");
  }
  const cli = Object.entries(services).find(([, svc]) => (Array.isArray(svc.command) ? svc.command : [])[0] === "chunkmill");
  if (!cli) {
    errs.push("no service runs the chunkmill CLI");
    return errs;
  }
  const [name, svc] = cli;
  if (!(svc.profiles || []).length) errs.push(`${name}: has no profile (docker-compose up would start it)`);
  const env = svc.environment || {};
  const entries = Array.isArray(env) ? env.map((e) => String(e).split("=")) : Object.entries(env);
  for (const [k, v] of entries) {
    if (/(PASSWORD|TOKEN)$/.test(k) && v !== undefined && v !== null && v !== "") errs.push(`${name}: ${k} is a literal value in the compose file`);
  }
  if (new Map(entries).get("CHUNKMILL_NATS_USER") !== "ops") errs.push(`${name}: CHUNKMILL_NATS_USER is not "ops"`);
  const pw = secretsOf(svc).find((x) => x.target === "nats_password");
  if (!pw || pw.source !== "ops_password") errs.push(`${name}: nats_password is not ops_password`);
  if (!JSON.stringify(svc.entrypoint || "").includes("/run/secrets/nats_password")) errs.push(`${name}: CHUNKMILL_NATS_PASSWORD is not read from /run/secrets/nats_password`);
  if (secretsOf(svc).some((x) => x.source === "lease_key")) errs.push(`${name}: the CLI must not hold the lease key`);
  tokenFile(svc, name);
  return errs;
}

let passed = 0;
let failed = 0;
function report(ok, title, details) {
  if (ok) passed++; else failed++;
  console.log(`${ok ? "ok" : "not ok"} - compose: ${title}`);
  if (!ok) for (const d of details || []) console.log(`    # ${d}`);
}

const file = process.argv[2];
const text = fs.readFileSync(file && file !== "-" ? file : 0, "utf8");
const doc = YAML.parse(text);
const errs = composeErrors(doc);
report(errs.length === 0, "NATS authorization: per-role users, passwords and the lease key from secrets", errs);

// Broken variants: each must be rejected for its reason.
const clone = () => JSON.parse(JSON.stringify(doc));
const cases = [
  ["a literal password", (d) => { d.services.mapper.environment.CHUNKMILL_NATS_PASSWORD = "hunter2"; }, "is a literal value"],
  ["NATS without its config", (d) => { d.services.nats.entrypoint = ["nats-server"]; d.services.nats.command = ["--port", "4222"]; }, "without a config file"],
  ["the mapper holding the lease key", (d) => { d.services.mapper.secrets.push("lease_key"); }, "must not hold the lease key"],
  ["the saver without the lease key", (d) => { d.services.saver.secrets = d.services.saver.secrets.filter((s) => (s.source || s) !== "lease_key"); }, "no lease_key secret"],
  ["the saver with the mapper's password", (d) => { d.services.saver.secrets = [{ source: "mapper_password", target: "nats_password" }, "lease_key"]; }, "not saver_password"],
  ["a secret file outside deploy/secrets", (d) => { d.secrets.lease_key.file = "/somewhere/lease.key"; }, "not a file under deploy/secrets/"],
  ["the fetcher without --serve", (d) => { d.services.fetcher.command = ["fetcher"]; }, "does not run --serve"],
  ["the fetcher without the API token", (d) => { d.services.fetcher.secrets = d.services.fetcher.secrets.filter((s) => (s.source || s) !== "api_token"); }, "fetcher: no api_token secret"],
  ["the cli service started by up", (d) => { delete d.services.cli.profiles; }, "has no profile"],
  ["the cli service as the fetcher user", (d) => { d.services.cli.environment.CHUNKMILL_NATS_USER = "fetcher"; }, "CHUNKMILL_NATS_USER is not \"ops\""],
  ["the cli service with the lease key", (d) => { d.services.cli.secrets.push("lease_key"); }, "must not hold the lease key"],
];
for (const [title, breakIt, want] of cases) {
  const d = clone();
  breakIt(d);
  const e = composeErrors(d);
  report(e.some((x) => x.includes(want)), `broken: ${title} is rejected (${want})`, [`got: ${e.join(" | ") || "no errors"}`]);
}
console.log(`compose: ${passed} passed, ${failed} failed`);
process.exit(failed ? 1 : 0);
