'use strict';
// Stages what the artifact carries next to serverless.yml (the framework only packages files below
// its own folder): the skyclass package source (serve code only) and the chosen model folders from
// ../models. Runs before packaging, deploying a function, and serverless-offline; prints sizes.
// It also sets SKYCLASS_MODELS from custom.skyclass.models so the two cannot disagree, and, for
// serverless-offline, picks the project's Python environment (see usePythonEnv).
const fs = require('node:fs');
const path = require('node:path');

// Never imported by skyclass.serve (they need torch); leaving them out keeps the artifact honest.
const SKIP_SOURCE = new Set(['train', 'export', 'data', 'reporting', 'model.py', 'cli.py', '__pycache__']);

function dirBytes(p) {
  const st = fs.statSync(p);
  if (!st.isDirectory()) return st.size;
  return fs.readdirSync(p).reduce((sum, name) => sum + dirBytes(path.join(p, name)), 0);
}

const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;

class StageSkyclass {
  constructor(serverless, options, { log } = {}) {
    this.serverless = serverless;
    this.log = log || { notice: (m) => serverless.cli.log(m), warning: (m) => serverless.cli.log(m) };
    const stage = () => this.stage();
    this.hooks = {
      initialize: () => this.setEnvironment(),
      'before:package:createDeploymentArtifacts': stage,
      'before:deploy:function:packageFunction': stage,
      'before:offline:start': () => this.offline(),
      'before:offline:start:init': () => this.offline(),
    };
  }

  settings() {
    const custom = (this.serverless.service.custom || {}).skyclass || {};
    const models = String(custom.models || '')
      .split(',')
      .map((m) => m.trim())
      .filter((m) => m && m !== 'none'); // --param cannot be empty: "none" = S3 only
    for (const m of models) {
      if (!/^[A-Za-z0-9._-]+$/.test(m)) throw new Error(`custom.skyclass.models: bad name ${m}`);
    }
    const servicePath = this.serverless.serviceDir || this.serverless.config.servicePath;
    const repo = path.resolve(servicePath, custom.repoRoot || '..');
    return { models, servicePath, repo };
  }

  setEnvironment() {
    const { models } = this.settings();
    const env = (this.serverless.service.provider.environment ||= {});
    if (models.length && !env.SKYCLASS_MODELS) {
      env.SKYCLASS_MODELS = models.map((m) => `models/${m}`).join(',');
    }
  }

  offline() {
    this.usePythonEnv();
    this.stage();
  }

  // serverless-offline runs the handler with `python3` from PATH, after prepending
  // $VIRTUAL_ENV/bin when VIRTUAL_ENV is set. Without this, a plain `npm run offline` found the
  // system python3.11, which has no mangum, and every request hung 15 s to a 504. An active venv
  // wins; else the project's ../.venv (scripts/serve.sh or scripts/test.sh make it).
  // The staged copy (what the artifact carries) comes first on the handler's sys.path, before an
  // installed skyclass (serverless-offline only appends '.'), so offline runs what Lambda runs.
  usePythonEnv() {
    if (this.pythonChosen) return;
    this.pythonChosen = true;
    const { servicePath } = this.settings();
    const extra = process.env.PYTHONPATH ? [process.env.PYTHONPATH] : [];
    process.env.PYTHONPATH = [servicePath, ...extra].join(path.delimiter);
    if (process.env.VIRTUAL_ENV) {
      this.log.notice(`skyclass: handler Python from the active venv ${process.env.VIRTUAL_ENV}`);
      return;
    }
    const { repo } = this.settings();
    const venv = path.join(repo, '.venv');
    if (fs.existsSync(path.join(venv, 'bin', 'python3'))) {
      process.env.VIRTUAL_ENV = venv;
      this.log.notice(`skyclass: handler Python from ${venv}`);
    } else {
      this.log.warning(
        `skyclass: no ${venv}: run "bash scripts/serve.sh" once (it makes it) or activate a venv ` +
          'with "pip install -e ." before "npm run offline"; the handler answers 502 without it',
      );
    }
  }

  stage() {
    if (this.staged) return;
    this.staged = true;
    const { models, servicePath, repo } = this.settings();
    const pkgSrc = path.join(repo, 'src', 'skyclass');
    const pkgDst = path.join(servicePath, 'skyclass');
    const modelsDst = path.join(servicePath, 'models');
    fs.rmSync(pkgDst, { recursive: true, force: true });
    fs.rmSync(modelsDst, { recursive: true, force: true });
    fs.cpSync(pkgSrc, pkgDst, {
      recursive: true,
      filter: (src) => {
        const rel = path.relative(pkgSrc, src);
        const parts = rel.split(path.sep);
        if (parts.includes('__pycache__') || src.endsWith('.pyc')) return false;
        if (parts.length === 1 && SKIP_SOURCE.has(parts[0])) return false;
        return !(parts.length === 2 && parts[0] === 'serve' && parts[1] === 'commands.py');
      },
    });
    this.log.notice(`skyclass: package source ${mb(dirBytes(pkgDst))} (serve code only)`);
    for (const name of models) {
      const src = path.join(repo, 'models', name);
      if (!fs.existsSync(path.join(src, 'model.json'))) {
        throw new Error(`custom.skyclass.models: ${src} is not a model folder (no model.json)`);
      }
      // Only the variant the function serves (SKYCLASS_VARIANT) travels: the other ONNX file would
      // be dead weight in the zip. A model without that variant keeps all its files.
      const variant = String(this.serverless.service.provider.environment?.SKYCLASS_VARIANT || '');
      const files = JSON.parse(fs.readFileSync(path.join(src, 'model.json'), 'utf8')).files || {};
      const chosen = variant || Object.keys(files)[0];
      const unused = files[chosen]
        ? Object.entries(files).filter(([v]) => v !== chosen).map(([, f]) => path.join(src, f.path))
        : [];
      fs.cpSync(src, path.join(modelsDst, name), {
        recursive: true,
        filter: (file) => !unused.includes(file),
      });
      const shipped = files[chosen] ? chosen : Object.keys(files).join('+');
      const size = mb(dirBytes(path.join(modelsDst, name)));
      this.log.notice(`skyclass: model ${name} ${size} (${shipped})`);
    }
    if (!models.length) this.log.notice('skyclass: no model folder in the artifact (MODEL_S3_URI)');
  }
}

module.exports = StageSkyclass;
