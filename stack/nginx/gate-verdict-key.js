// Cache key of the gate's verdicts (njs, for stack/nginx/mlflow-proxy.conf.template): the SHA-256 of what the gate's
// decision reads. nginx writes cache keys into its cache files; hashed, no token (or query string) goes to disk.
//
// The input is $mlflow_gate_key_input, set by the template to "$request_method\n$request_uri\n$http_authorization":
// the gate decides from exactly these three (X-Original-Method/-URI are set by nginx from the first two). None can
// contain a line feed (nginx ends the request line and every header at one), so no two requests share an input.
// SHA-256, not MD5 or SHA-1: a user who could make two of their own requests collide (a read and a delete) would
// get the read's allow for the delete.
import crypto from 'crypto';

function verdictKey(r) {
    return crypto.createHash('sha256').update(r.rawVariables.mlflow_gate_key_input).digest('hex');
}

export default { verdictKey };
