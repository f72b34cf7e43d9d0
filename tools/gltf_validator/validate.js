// Usage: node validate.js FILE.glb [FILE.glb ...]  -> one JSON report summary per line.
// Calls the Khronos validator's validateBytes; exit 1 if any file has errors.
const fs = require('fs');
const path = require('path');
const validator = require('gltf-validator');

async function main() {
  let bad = 0;
  for (const file of process.argv.slice(2)) {
    const data = new Uint8Array(fs.readFileSync(file));
    const report = await validator.validateBytes(data, {
      uri: path.basename(file),
      maxIssues: 50,
      externalResourceFunction: () => Promise.reject(new Error('external resources are not allowed')),
    });
    const issues = report.issues;
    const errors = issues.messages.filter(m => m.severity === 0);
    if (issues.numErrors > 0) bad++;
    console.log(JSON.stringify({
      file, numErrors: issues.numErrors, numWarnings: issues.numWarnings, numInfos: issues.numInfos,
      errors: errors.map(m => `${m.code} ${m.pointer || ''} ${m.message}`),
      warnings: issues.messages.filter(m => m.severity === 1).map(m => `${m.code} ${m.message}`),
      info: report.info,
    }));
  }
  process.exit(bad ? 1 : 0);
}
main().catch(e => { console.error(String(e)); process.exit(2); });
