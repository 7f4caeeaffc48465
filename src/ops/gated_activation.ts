/**
 * gatedActivation: ELU(features) · sigmoid(gates) over the two channel halves of a gated
 * convolution's output, in one kernel each way (math in shaders/gated_activation.ts).
 */
import { gatedActivationBackwardShader, gatedActivationShader } from "../../shaders/gated_activation.ts";
import { record } from "../autograd/tape.ts";
import { currentGpu } from "../device/runtime.ts";
import { fmt, ShapeError } from "../tensor/shape.ts";
import type { Tensor } from "../tensor/tensor.ts";
import { checkFloat } from "./elementwise.ts";
import { grid1d, launch, output, params, withOperandTextures } from "./kernel.ts";

/** y [N, 2C, H, W] (features, then gates) -> ELU(y[:, :C]) · sigmoid(y[:, C:]) [N, C, H, W]. */
export function gatedActivation(y: Tensor, channels: number): Tensor {
  const op = "gatedActivation";
  checkFloat(op, y);
  if (y.rank !== 4 || y.shape[1] !== 2 * channels || !Number.isInteger(channels) || channels < 1) {
    throw new ShapeError(
      op,
      `expects [N, 2·${channels}, H, W] (features then gates along channels), got ${fmt(y.shape)}`,
    );
  }
  const [n, , h, w] = y.shape;
  const vec4 = (h * w) % 4 === 0;
  const lanes = vec4 ? 4 : 1;
  const units = (n * channels * h * w) / lanes;
  const p = params().u32(units, (h * w) / lanes, channels, 0);
  const out = output(op, [n, channels, h, w]);
  // On CPU adapters the inputs are read through operand textures (cheaper loads).
  const cpu = currentGpu().adapterClass === "cpu";
  if (units > 0) {
    withOperandTextures(cpu, [y], [vec4], ([yIn], textures) => {
      launch(op, gatedActivationShader(vec4, textures), [yIn, out, p], grid1d(units));
    });
  }
  return record(op, [y], out, (dout) => {
    const dy = output(`${op}.backward`, y.shape);
    if (units > 0) {
      withOperandTextures(cpu, [y, dout], [vec4, vec4], (operands, textures) => {
        launch(
          `${op}.backward`,
          gatedActivationBackwardShader(vec4, textures),
          [...operands, dy, p],
          grid1d(units),
        );
      });
    }
    return [dy];
  });
}
