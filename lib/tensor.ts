import { type DType, native, type Tensor as NativeTensor, type TensorStatics } from './native';

export type { DType, TensorData, ArrayOf, DTypeOf } from './native';
export type Tensor<D extends DType = DType> = NativeTensor<D>;

// Forwards every argument, so the native side checks what the caller really passed.
function forward<K extends keyof TensorStatics>(name: K): TensorStatics[K] {
  return ((...args: unknown[]) => (native().Tensor[name] as (...a: unknown[]) => unknown)(...args)) as TensorStatics[K];
}

/** Tensor constructors (the native class's statics, bound on first use). */
export const Tensor: TensorStatics = {
  fromArray: forward('fromArray'),
  zeros: forward('zeros'),
  randn: forward('randn'),
};

export function isTensor(value: unknown): value is NativeTensor {
  return typeof value === 'object' && value !== null && value instanceof (native().Tensor as unknown as new () => object);
}
