// PCA of a few hundred rows in the browser: the top principal components of X [n, d] through the
// n x n Gram matrix of the centred rows (n = latent steps, small; d = 128) and cyclic Jacobi.

/** Eigen-decomposition of a symmetric matrix (array of rows); returns {values, vectors} sorted by
 *  value, descending; vectors[k] is the k-th eigenvector. */
export function symmetricEigen(matrix, { sweeps = 60, tol = 1e-12 } = {}) {
  const n = matrix.length;
  const a = matrix.map((row) => Float64Array.from(row));
  const v = Array.from({ length: n }, (_, i) => {
    const r = new Float64Array(n);
    r[i] = 1;
    return r;
  });
  const scale = Math.max(1e-300, ...a.map((row, i) => Math.abs(row[i])));
  for (let sweep = 0; sweep < sweeps; sweep++) {
    let off = 0;
    for (let p = 0; p < n; p++) for (let q = p + 1; q < n; q++) off += a[p][q] * a[p][q];
    if (Math.sqrt(off) <= tol * scale) break;
    for (let p = 0; p < n; p++) {
      for (let q = p + 1; q < n; q++) {
        const apq = a[p][q];
        if (Math.abs(apq) <= 1e-300) continue;
        // Rotation that zeroes a[p][q] (Golub & Van Loan, Alg. 8.4.1).
        const theta = (a[q][q] - a[p][p]) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < n; k++) { // columns p, q
          const akp = a[k][p], akq = a[k][q];
          a[k][p] = c * akp - s * akq;
          a[k][q] = s * akp + c * akq;
        }
        for (let k = 0; k < n; k++) { // rows p, q
          const apk = a[p][k], aqk = a[q][k];
          a[p][k] = c * apk - s * aqk;
          a[q][k] = s * apk + c * aqk;
        }
        for (let k = 0; k < n; k++) { // eigenvectors are the columns of V; stored transposed here
          const vpk = v[p][k], vqk = v[q][k];
          v[p][k] = c * vpk - s * vqk;
          v[q][k] = s * vpk + c * vqk;
        }
      }
    }
  }
  const order = [...Array(n).keys()].sort((i, j) => a[j][j] - a[i][i]);
  return { values: order.map((i) => a[i][i]), vectors: order.map((i) => Array.from(v[i])) };
}

/** The rows of X [n, d] projected on their top `k` principal components.
 *  Returns {projection: [n][k], explained: [k] (fraction of the variance), mean: [d]}.
 *  Signs are fixed so each component's largest-magnitude score is positive (deterministic). */
export function pca(rows, k = 2) {
  const n = rows.length;
  const d = n ? rows[0].length : 0;
  const mean = new Float64Array(d);
  for (const r of rows) for (let j = 0; j < d; j++) mean[j] += r[j] / n;
  const centred = rows.map((r) => Float64Array.from(r, (x, j) => x - mean[j]));
  const gram = centred.map((ri) => centred.map((rj) => {
    let s = 0;
    for (let j = 0; j < d; j++) s += ri[j] * rj[j];
    return s;
  }));
  const total = gram.reduce((s, row, i) => s + row[i], 0);
  const { values, vectors } = n ? symmetricEigen(gram) : { values: [], vectors: [] };
  const projection = Array.from({ length: n }, () => new Array(k).fill(0));
  const explained = new Array(k).fill(0);
  for (let c = 0; c < Math.min(k, n); c++) {
    const lambda = Math.max(0, values[c]);
    if (total <= 0 || lambda <= total * 1e-12) continue; // no variance left in this direction
    // X_c = U S V^T, so the scores X_c V = U S: the Gram eigenvector times sqrt(eigenvalue).
    const u = vectors[c];
    let big = 0;
    for (const x of u) if (Math.abs(x) > Math.abs(big)) big = x;
    const sign = big < 0 ? -1 : 1;
    for (let i = 0; i < n; i++) projection[i][c] = sign * u[i] * Math.sqrt(lambda);
    explained[c] = lambda / total;
  }
  return { projection, explained, mean: Array.from(mean) };
}
