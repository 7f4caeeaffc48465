/** A float64 matmul reference, shared by the matmul tests and the smoke subset. */
import { type Nd, nd } from "./reference.ts";

/** Float64 reference: C[b] = op(A[b])·op(B[b]) with A, B, C flattened to `batch` matrices. */
export class Product {
  constructor(
    readonly batch: number,
    readonly M: number,
    readonly N: number,
    readonly K: number,
    readonly tA: boolean,
    readonly tB: boolean,
  ) {}
  /** Flat index of op(A)[b][m][k] in A's storage, and of op(B)[b][k][n] in B's. */
  ia(b: number, m: number, k: number): number {
    const { M, K } = this;
    return b * M * K + (this.tA ? k * M + m : m * K + k);
  }
  ib(b: number, k: number, n: number): number {
    const { N, K } = this;
    return b * K * N + (this.tB ? n * K + k : k * N + n);
  }
  forward(a: Nd, bm: Nd, shape: number[]): Nd {
    const { batch, M, N, K } = this;
    const c = nd(shape);
    for (let b = 0; b < batch; b++) {
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          let s = 0;
          for (let k = 0; k < K; k++) s += a.data[this.ia(b, m, k)] * bm.data[this.ib(b, k, n)];
          c.data[(b * M + m) * N + n] = s;
        }
      }
    }
    return c;
  }
  /** dA[m, k] = Σ_n dC[m, n]·B[k, n] and dB[k, n] = Σ_m A[m, k]·dC[m, n], in storage layout. */
  backward(dy: Nd, a: Nd, bm: Nd): [Nd, Nd] {
    const { batch, M, N, K } = this;
    const da = nd(a.shape), db = nd(bm.shape);
    for (let b = 0; b < batch; b++) {
      for (let m = 0; m < M; m++) {
        for (let n = 0; n < N; n++) {
          const g = dy.data[(b * M + m) * N + n];
          for (let k = 0; k < K; k++) {
            da.data[this.ia(b, m, k)] += g * bm.data[this.ib(b, k, n)];
            db.data[this.ib(b, k, n)] += g * a.data[this.ia(b, m, k)];
          }
        }
      }
    }
    return [da, db];
  }
}
