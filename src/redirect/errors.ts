/**
 * A capture setting (an annotation, an istio-proxy variable) whose value the rule core refuses.
 * `message` names the setting, `details` the value and why. The rule core knows no protocol: the
 * CNI layer reports this as its error 106, `istio-cni explain` as a message.
 */
export class InvalidCaptureValue extends Error {
  constructor(
    message: string,
    readonly details: string,
  ) {
    super(message);
    this.name = 'InvalidCaptureValue';
  }
}
