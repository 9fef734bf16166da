// Bundles src/app.js (and the CSS it imports) into ../static/: hashed names, a manifest, the app
// shell, a .gz beside each asset and build.json (hashes of the sources and of the output, which
// tests/dashboard/test_build.py checks). Run through scripts/build-dashboard.
//
//   node build.mjs [OUTDIR]     (default ../static)
import { build } from 'esbuild';
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { basename, join, relative } from 'node:path';
import { gzipSync } from 'node:zlib';

const here = new URL('.', import.meta.url).pathname;
const out = process.argv[2] || join(here, '..', 'static');
const assets = join(out, 'assets');
rmSync(assets, { recursive: true, force: true });
mkdirSync(assets, { recursive: true });

const result = await build({
  entryPoints: [join(here, 'src', 'app.js')],
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['chrome110', 'firefox115', 'safari16'],
  entryNames: '[name].[hash]',
  outdir: assets,
  metafile: true,
  legalComments: 'none',
  charset: 'utf8',
  logLevel: 'warning',
});

const names = Object.keys(result.metafile.outputs).map((p) => basename(p));
const js = names.find((n) => n.endsWith('.js'));
const css = names.find((n) => n.endsWith('.css'));
const shell = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<meta name="littlestats" content="">
<title>LittleStats</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/${css}">
<script defer src="/assets/${js}"></script>
</head>
<body>
<div id="app"><noscript>The LittleStats dashboard needs JavaScript. Every number is also in the API: /api/v2/docs</noscript></div>
</body>
</html>
`;
writeFileSync(join(out, 'index.html'), shell);
writeFileSync(join(out, 'manifest.json'), JSON.stringify({ js, css }, null, 2) + '\n');

let gzipTotal = 0;
for (const name of [js, css]) {
  const body = readFileSync(join(assets, name));
  const gz = gzipSync(body, { level: 9 });
  writeFileSync(join(assets, name + '.gz'), gz);
  gzipTotal += gz.length;
}

const sha = (buf) => createHash('sha256').update(buf).digest('hex');
function files(dir) {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? files(p) : [p];
  });
}
// Sources: everything that decides the output (the code, the pinned tools and libraries).
const sources = [...files(join(here, 'src')), join(here, 'build.mjs'), join(here, 'package-lock.json')]
  .map((p) => relative(here, p)).sort();
const info = {
  sources: Object.fromEntries(sources.map((p) => [p, sha(readFileSync(join(here, p)))])),
  outputs: Object.fromEntries(['index.html', 'manifest.json', `assets/${js}`, `assets/${css}`]
    .map((p) => [p, sha(readFileSync(join(out, p)))])),
  bundler: `esbuild ${(await import('esbuild')).version}`,
  gzip_bytes: gzipTotal,
};
writeFileSync(join(out, 'build.json'), JSON.stringify(info, null, 2) + '\n');
console.log(`dashboard: ${js} + ${css}, ${gzipTotal} bytes gzipped`);
if (gzipTotal > 80 * 1024) {
  console.error('error: the dashboard must stay within 80 KB of JS + CSS gzipped');
  process.exit(1);
}
