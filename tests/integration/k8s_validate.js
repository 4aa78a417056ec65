// k8s_validate.js — checks config/deploy/k8s offline (run by test_k8s.sh, which installs the
// pinned npm packages of tests/integration/k8s/ into the build directory and sets NODE_PATH):
//   node k8s_validate.js MANIFEST_DIR SETTINGS_FILE [ENV_DIR]
// SETTINGS_FILE: `dynd --print-config` (the DYND_* names dynd knows). ENV_DIR: one file per
// dynd container, its DYND_* environment as NAME=VALUE lines (values from the pod's metadata
// as a sample pod name), for test_k8s.sh to run `dynd --check-config` on.
//  1. every Kubernetes object is validated against the Kubernetes schemas (kubernetes-models'
//     validate(): types, required fields, enums, formats). Those schemas accept unknown fields
//     (a misspelt one would be dropped, or refused by a strict API server): unknownFields()
//     reports every field the schema's validator never looked at;
//  2. kustomizations list files that exist, and a strategic merge patch (gpu/) is applied to
//     its base and the result validated;
//  3. KServe resources hold the fields KServe requires;
//  4. cross-checks with dynd: probe paths and port, the drain within the grace period, DYND_*
//     names, volumes where dynd writes, Service / HPA / PVC / ConfigMap references.
// Prints one line per problem; exit status 1 if any, else 0 with a summary line.
"use strict";
const fs = require("fs");
const path = require("path");
const YAML = require("yaml");

const [dir, settingsFile, envDir] = process.argv.slice(2);
if (!dir || !settingsFile) {
    console.error("usage: node k8s_validate.js MANIFEST_DIR SETTINGS_FILE");
    process.exit(2);
}
// What dynd serves (server/README.md, the Dockerfile's user and paths).
const PORT = 8080, LIVE = "/v2/health/live", READY = "/v2/health/ready", UID = 10001;
const DIR_SETTINGS = ["DYND_MODEL_DIR", "DYND_STATE_DIR", "DYND_DATA_DIR"];

let problems = 0, checks = 0, envFiles = 0;
function check(cond, where, msg) {
    checks++;
    if (!cond) { problems++; console.log(`  FAIL: ${where}: ${msg}`); }
    return !!cond;
}

// dynd's settings, as the environment names it reads.
const known = new Set(["DYND_CONFIG"]);
for (const line of fs.readFileSync(settingsFile, "utf8").split("\n")) {
    const m = /^([a-z_0-9]+) =/.exec(line);
    if (m) known.add("DYND_" + m[1].toUpperCase());
}
if (known.size < 20) { console.log(`  FAIL: ${settingsFile} lists only ${known.size - 1} settings`); process.exit(1); }

// ---- parse every YAML file ----
function walk(d) {
    return fs.readdirSync(d, { withFileTypes: true }).flatMap((e) =>
        e.isDirectory() ? walk(path.join(d, e.name)) : /\.ya?ml$/.test(e.name) ? [path.join(d, e.name)] : []);
}
const files = walk(dir).sort();
const docs = []; // {file, rel, obj}
for (const f of files) {
    const rel = path.relative(dir, f);
    for (const d of YAML.parseAllDocuments(fs.readFileSync(f, "utf8"))) {
        if (!check(d.errors.length === 0, rel, `YAML: ${d.errors.map((e) => e.message).join("; ")}`)) continue;
        const obj = d.toJS();
        if (obj === null) continue;
        if (check(obj.apiVersion && obj.kind && (obj.metadata || {}).name !== undefined ||
                  obj.kind === "Kustomization", rel, "a document without apiVersion, kind or metadata.name"))
            docs.push({ file: f, rel, obj });
    }
}
const at = (d) => `${d.rel} ${d.obj.kind}/${(d.obj.metadata || {}).name || ""}`;
const byKind = (k) => docs.filter((d) => d.obj.kind === k && !d.patch);

// ---- kustomizations: listed files exist; patches are marked and applied to their base ----
function strategicMerge(base, patch) { // lists of objects with `name` merge by name
    if (Array.isArray(base) && Array.isArray(patch)) {
        if (!patch.every((p) => p && typeof p === "object" && "name" in p)) return patch;
        const out = base.map((b) => ({ ...b }));
        for (const p of patch) {
            const i = out.findIndex((b) => b.name === p.name);
            if (i >= 0) out[i] = strategicMerge(out[i], p); else out.push(p);
        }
        return out;
    }
    if (base && patch && typeof base === "object" && typeof patch === "object") {
        const out = { ...base };
        for (const k of Object.keys(patch)) {
            if (patch[k] === null) delete out[k]; // kustomize: null deletes the field
            else out[k] = k in base ? strategicMerge(base[k], patch[k]) : patch[k];
        }
        return out;
    }
    return patch;
}
const patched = [];
for (const k of byKind("Kustomization")) {
    const kdir = path.dirname(k.file);
    const listed = (k.obj.resources || []).map((r) => path.resolve(kdir, r));
    for (const r of listed) check(fs.existsSync(r), k.rel, `resource ${path.relative(dir, r)} does not exist`);
    for (const p of k.obj.patches || []) {
        const pf = path.resolve(kdir, p.path);
        const pd = docs.find((d) => d.file === pf);
        if (!check(pd, k.rel, `patch ${p.path} does not exist`)) continue;
        pd.patch = true;
        const base = docs.find((d) => !d.patch && d.obj.kind === pd.obj.kind &&
            d.obj.metadata.name === pd.obj.metadata.name && listed.includes(path.dirname(d.file)));
        if (check(base, pd.rel, `no ${pd.obj.kind}/${pd.obj.metadata.name} in the base to patch`) &&
            pd.obj.$patch !== "delete") // `$patch: delete` removes the base object from the overlay
            patched.push({ file: pd.file, rel: `${pd.rel} (patched onto ${base.rel})`,
                           obj: strategicMerge(base.obj, pd.obj), patch: false, derived: true,
                           overlay: kdir });
    }
    if (path.resolve(kdir) === path.resolve(dir)) { // the top kustomization lists every top file
        for (const d of docs) {
            if (path.dirname(d.file) !== path.resolve(dir) || d.obj.kind === "Kustomization") continue;
            if (d.obj.kind === "Secret") continue; // not applied on purpose: a placeholder token
            check(listed.includes(d.file), k.rel, `${d.rel} is not in resources`);
        }
    }
}
docs.push(...patched);

// ---- 1. the Kubernetes schemas ----
// The compiled validator of a kubernetes-models model (module "kubernetes-models/<apiVersion>/
// <kind>", which requires "../_schemas/<Schema>.js").
function rawValidator(apiVersion, kind) {
    const f = require.resolve(`kubernetes-models/${apiVersion}/${kind}`);
    const m = /require\("(\.[^"]*_schemas\/\w+\.js)"\)/.exec(fs.readFileSync(f, "utf8"));
    if (!m) throw new Error(`no schema found in ${f}`);
    return require(path.resolve(path.dirname(f), m[1])).validate;
}
// The paths of obj's fields that validate() never read: it reads every property its schema
// declares and enumerates maps (labels, data, limits), so what it skipped is unknown to the
// schema. Run on a valid object only (a failing validator may stop early).
function unknownFields(obj, validate) {
    const read = new WeakMap(), enumerated = new WeakSet();
    const wrap = (o) => {
        if (!o || typeof o !== "object") return o;
        if (!read.has(o)) read.set(o, new Set());
        return new Proxy(o, {
            get(t, k) { if (typeof k === "string") read.get(t).add(k); return wrap(t[k]); },
            has(t, k) { if (typeof k === "string") read.get(t).add(k); return k in t; },
            ownKeys(t) { enumerated.add(t); return Reflect.ownKeys(t); },
        });
    };
    if (!validate(wrap(obj))) return null;
    const out = [];
    const walk = (o, p) => {
        if (!o || typeof o !== "object") return;
        if (!Array.isArray(o) && read.has(o) && !enumerated.has(o))
            for (const k of Object.keys(o)) if (!read.get(o).has(k)) out.push(`${p}/${k}`);
        for (const k of Object.keys(o)) walk(o[k], `${p}/${k}`);
    };
    walk(obj, "");
    return out;
}
// Validates obj as apiVersion/kind: schema errors and unknown fields, reported at `where`.
function validateK8s(obj, apiVersion, kind, where) {
    let Model;
    try { Model = require(`kubernetes-models/${apiVersion}`)[kind]; } catch (e) { Model = undefined; }
    if (!check(Model, where, `${apiVersion} ${kind} is not a Kubernetes kind kubernetes-models knows`)) return false;
    try { new Model(obj).validate(); } catch (e) { return check(false, where, `schema: ${e.message}`); }
    const unknown = unknownFields(JSON.parse(JSON.stringify(obj)), rawValidator(apiVersion, kind));
    if (!check(unknown, where, "the schema's own validator refuses what validate() accepted")) return false;
    return check(unknown.length === 0, where, `fields the schema does not know: ${unknown.join(", ")}`);
}
const KSERVE = "serving.kserve.io";
let validated = 0;
for (const d of docs) {
    const { apiVersion, kind } = d.obj;
    if (d.patch || kind === "Kustomization" || apiVersion.startsWith(KSERVE + "/")) continue;
    if (validateK8s(d.obj, apiVersion, kind, at(d))) validated++;
}

// ---- 3. KServe ----
const runtimes = byKind("ServingRuntime");
for (const d of runtimes) {
    const s = d.obj.spec || {};
    check(d.obj.apiVersion === `${KSERVE}/v1alpha1`, at(d), "apiVersion is not serving.kserve.io/v1alpha1");
    check(Array.isArray(s.supportedModelFormats) && s.supportedModelFormats.every((f) => f && f.name),
          at(d), "spec.supportedModelFormats[].name missing");
    check((s.supportedModelFormats || []).some((f) => f.name === "dyn"), at(d), "does not declare the format dyn");
    check((s.protocolVersions || []).includes("v2"), at(d), "protocolVersions lacks v2");
    check(Array.isArray(s.containers) && s.containers.length > 0 && s.containers.every((c) => c.name && c.image),
          at(d), "spec.containers[] (name, image) missing");
    for (const c of s.containers || []) {
        validateK8s(c, "v1", "Container", `${at(d)} container ${c.name}`);
        const env = Object.fromEntries((c.env || []).map((e) => [e.name, e.value]));
        checkEnvNames(Object.keys(env), at(d));
        writeEnv(env, `${at(d)} container ${c.name}`);
        check(env.DYND_MODEL_DIR === "/mnt/models", at(d), "DYND_MODEL_DIR is not /mnt/models (KServe's mount)");
        check(env.DYND_LISTEN_ADDRESS === "0.0.0.0", at(d), "DYND_LISTEN_ADDRESS is not 0.0.0.0");
        check((c.ports || []).some((p) => p.containerPort === PORT) && Number(env.DYND_PORT) === PORT,
              at(d), `container port / DYND_PORT is not ${PORT}`);
        if (c.readinessProbe) check(c.readinessProbe.httpGet && c.readinessProbe.httpGet.path === READY,
                                    at(d), `readinessProbe is not GET ${READY}`);
    }
}
for (const d of byKind("InferenceService")) {
    const m = ((d.obj.spec || {}).predictor || {}).model || {};
    check(d.obj.apiVersion === `${KSERVE}/v1beta1`, at(d), "apiVersion is not serving.kserve.io/v1beta1");
    check(m.modelFormat && m.modelFormat.name, at(d), "spec.predictor.model.modelFormat.name missing");
    check(m.storageUri || m.runtime, at(d), "spec.predictor.model needs storageUri or runtime");
    const rt = runtimes.find((r) => r.obj.metadata.name === m.runtime);
    if (m.runtime) check(rt, at(d), `runtime ${m.runtime}: no such ServingRuntime here`);
    if (rt) check(rt.obj.spec.supportedModelFormats.some((f) => f.name === (m.modelFormat || {}).name),
                  at(d), `runtime ${m.runtime} does not support the format ${(m.modelFormat || {}).name}`);
    check(/^(s3|pvc):\/\/[^/]+/.test(m.storageUri || ""), at(d), `storageUri ${m.storageUri}: not s3:// or pvc://`);
    const pvc = /^pvc:\/\/([^/]+)/.exec(m.storageUri || "");
    if (pvc) check(byKind("PersistentVolumeClaim").some((p) => p.obj.metadata.name === pvc[1]),
                   at(d), `storageUri names the claim ${pvc[1]}, not in these manifests`);
}

// ---- 4. cross-checks with dynd ----

function writeEnv(env, where) { // ENV_DIR/<n>.env, the first line a comment naming the container
    if (!envDir) return;
    const lines = Object.entries(env).filter(([k]) => k.startsWith("DYND_")).map(([k, v]) => `${k}=${v}`);
    fs.writeFileSync(path.join(envDir, `${++envFiles}.env`), [`# ${where}`, ...lines, ""].join("\n"));
}
function checkEnvNames(names, where) {
    for (const n of names) if (n.startsWith("DYND_")) check(known.has(n), where, `${n} is not a dynd setting`);
}
for (const d of [...byKind("ConfigMap"), ...byKind("Secret")])
    checkEnvNames(Object.keys({ ...d.obj.data, ...d.obj.stringData }), at(d));
// a ConfigMap as a Deployment sees it: its overlay's patched version, else the base's
const configMap = (n, ov) => {
    const all = byKind("ConfigMap").filter((c) => c.obj.metadata.name === n);
    return (all.find((c) => c.overlay === ov) || all.find((c) => !c.derived) || { obj: {} }).obj.data;
};
const secret = (n) => byKind("Secret").find((c) => c.obj.metadata.name === n);
const claims = new Set(byKind("PersistentVolumeClaim").map((p) => p.obj.metadata.name));
const seconds = (v) => Number(v);

const deployments = docs.filter((d) => d.obj.kind === "Deployment" && !d.patch);
for (const d of deployments) {
    const pod = d.obj.spec.template.spec, where = at(d);
    const psc = pod.securityContext || {};
    check(psc.runAsNonRoot === true && psc.runAsUser === UID, where, `pod not runAsNonRoot as uid ${UID}`);
    const vols = new Map((pod.volumes || []).map((v) => [v.name, v]));
    for (const v of vols.values())
        if (v.persistentVolumeClaim) check(claims.has(v.persistentVolumeClaim.claimName), where,
                                           `volume ${v.name}: claim ${v.persistentVolumeClaim.claimName} not defined`);
    for (const c of pod.containers) {
        const cw = `${where} container ${c.name}`;
        // the environment as dynd sees it: envFrom sources, then env
        const env = {};
        for (const s of c.envFrom || []) {
            if (s.configMapRef) {
                const data = configMap(s.configMapRef.name, d.overlay);
                if (check(data, cw, `ConfigMap ${s.configMapRef.name} not defined`)) Object.assign(env, data);
            }
            if (s.secretRef) {
                const sec = secret(s.secretRef.name);
                if (check(sec, cw, `Secret ${s.secretRef.name} not defined`)) Object.assign(env, sec.obj.stringData);
            }
        }
        for (const e of c.env || []) // a fieldRef (DYND_REPLICA_ID) as a sample pod name
            env[e.name] = e.value !== undefined ? e.value : e.valueFrom.fieldRef ? "dynd-5d4f8b7c9-x2kqp" : "";
        checkEnvNames(Object.keys(env), cw);
        writeEnv(env, cw);
        const port = (c.ports || []).find((p) => p.containerPort === PORT);
        check(port && Number(env.DYND_PORT) === PORT && env.DYND_LISTEN_ADDRESS === "0.0.0.0", cw,
              `dynd must listen on 0.0.0.0:${PORT} (DYND_PORT, DYND_LISTEN_ADDRESS) and the container declare it`);
        const probe = (p, want, what) => {
            const h = p && p.httpGet;
            check(h && h.path === want && (h.port === PORT || (port && h.port === port.name)), cw,
                  `${what} is not GET ${want} on port ${PORT}`);
        };
        probe(c.startupProbe, LIVE, "startupProbe");
        probe(c.readinessProbe, READY, "readinessProbe");
        probe(c.livenessProbe, LIVE, "livenessProbe");
        // the drain: preStop pause + DYND_SHUTDOWN_GRACE_S < terminationGracePeriodSeconds
        const cmd = (((c.lifecycle || {}).preStop || {}).exec || {}).command || [];
        const pause = cmd[0] === "sleep" ? seconds(cmd[1]) : NaN;
        const grace = seconds(env.DYND_SHUTDOWN_GRACE_S);
        check(pause > 0, cw, "no preStop pause (exec sleep N)");
        check(grace > 0, cw, "DYND_SHUTDOWN_GRACE_S not set");
        check(pod.terminationGracePeriodSeconds > pause + grace, cw,
              `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} <= preStop ${pause} + DYND_SHUTDOWN_GRACE_S ${grace}`);
        const r = c.resources || {};
        for (const k of ["requests", "limits"]) for (const res of ["cpu", "memory"])
            check(r[k] && r[k][res] !== undefined, cw, `resources.${k}.${res} missing`);
        const sc = c.securityContext || {};
        check(sc.allowPrivilegeEscalation === false && sc.readOnlyRootFilesystem === true, cw,
              "securityContext: allowPrivilegeEscalation false and readOnlyRootFilesystem true expected");
        // read-only root: every directory dynd writes is a mounted volume
        const mounts = new Map((c.volumeMounts || []).map((m) => [m.mountPath, m]));
        for (const m of mounts.values()) check(vols.has(m.name), cw, `volumeMount ${m.name}: no such volume`);
        for (const s of DIR_SETTINGS)
            check(env[s] && mounts.has(env[s]) && !mounts.get(env[s]).readOnly, cw, `${s} (${env[s]}) is not a writable volume`);
    }
}

const podLabels = (d) => d.obj.spec.template.metadata.labels || {};
const matches = (sel, labels) => Object.entries(sel || {}).every(([k, v]) => labels[k] === v);
for (const d of deployments)
    check(matches(d.obj.spec.selector.matchLabels, podLabels(d)), at(d), "selector does not match the pod labels");
for (const d of byKind("Service")) {
    const targets = deployments.filter((t) => !t.derived && matches(d.obj.spec.selector, podLabels(t)));
    check(targets.length === 1, at(d), `selector matches ${targets.length} Deployments (1 expected)`);
    for (const p of d.obj.spec.ports) for (const t of targets)
        check(t.obj.spec.template.spec.containers.some((c) => (c.ports || []).some((cp) =>
              cp.name === p.targetPort || cp.containerPort === p.targetPort)), at(d),
              `targetPort ${p.targetPort} is not a port of ${t.obj.metadata.name}`);
}
for (const d of byKind("HorizontalPodAutoscaler")) {
    const ref = d.obj.spec.scaleTargetRef;
    const t = deployments.find((x) => !x.derived && x.obj.metadata.name === ref.name && ref.kind === "Deployment");
    if (check(t, at(d), `scaleTargetRef ${ref.kind}/${ref.name} not defined`))
        check(t.obj.spec.template.spec.containers.every((c) => ((c.resources || {}).requests || {}).cpu),
              at(d), "CPU utilization needs CPU requests on every container of the target");
}
for (const d of byKind("PodDisruptionBudget"))
    check(deployments.some((t) => matches(d.obj.spec.selector.matchLabels, podLabels(t))), at(d), "selects no Deployment");

check(validated > 0 && deployments.length > 0 && runtimes.length > 0, dir, "no manifests found");
if (problems) { console.log(`  ${problems} problem(s) in ${dir}`); process.exit(1); }
console.log(`  ${docs.length} documents in ${files.length} files, ${validated} validated against the ` +
            `Kubernetes schemas, ${checks} checks passed`);
