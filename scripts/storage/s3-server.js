// An S3-compatible test server: s3rver (objects on disk) behind a Signature Version 4 check.
//
// s3rver stores and serves objects but does not verify V4 signatures (it accepts any secret for
// a known key id). This front verifies every signed request with the AWS SDK's own signer
// (@smithy/signature-v4): it signs the request again, from the headers the client says it
// signed, with the secret it holds for the key id, and refuses a mismatch with S3's
// 403 SignatureDoesNotMatch, as AWS, MinIO and Ceph do. The request body is not re-hashed:
// the signature covers the x-amz-content-sha256 the client declared.
//
// Configuration comes from the environment, never from arguments:
//   S3_ADDRESS, S3_PORT      where to listen (127.0.0.1, 9100)
//   S3_DIRECTORY             where s3rver keeps the objects
//   S3_BUCKETS               buckets to create at start, comma-separated
//   S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY   the one key pair accepted
// Unsigned requests reach s3rver as anonymous ones (a public bucket).
'use strict';

const http = require('http');
const S3rver = require('s3rver');
const { SignatureV4 } = require('@smithy/signature-v4');
const { Sha256 } = require('@aws-crypto/sha256-js');

const address = process.env.S3_ADDRESS || '127.0.0.1';
const port = Number(process.env.S3_PORT || 9100);
const keyId = process.env.S3_ACCESS_KEY_ID;
const secret = process.env.S3_SECRET_ACCESS_KEY;
if (!keyId || !secret || !process.env.S3_DIRECTORY) {
  console.error('S3_DIRECTORY, S3_ACCESS_KEY_ID and S3_SECRET_ACCESS_KEY must be set');
  process.exit(2);
}

function s3Error(res, status, code, message) {
  const body =
    '<?xml version="1.0" encoding="UTF-8"?>\n' +
    `<Error><Code>${code}</Code><Message>${message}</Message></Error>`;
  res.writeHead(status, { 'Content-Type': 'application/xml', 'Content-Length': Buffer.byteLength(body) });
  res.end(body);
}

// "AWS4-HMAC-SHA256 Credential=ID/DATE/REGION/s3/aws4_request, SignedHeaders=a;b, Signature=hex"
function parseAuthorization(value) {
  const m = /^AWS4-HMAC-SHA256 (.*)$/.exec(value);
  if (!m) return null;
  const fields = {};
  for (const part of m[1].split(',')) {
    const eq = part.indexOf('=');
    if (eq > 0) fields[part.slice(0, eq).trim()] = part.slice(eq + 1).trim();
  }
  if (!fields.Credential || !fields.SignedHeaders || !fields.Signature) return null;
  const [id, date, region, service, terminator] = fields.Credential.split('/');
  if (terminator !== 'aws4_request') return null;
  return { id, date, region, service, signedHeaders: fields.SignedHeaders.split(';'), signature: fields.Signature };
}

// Signs the request again as the client described it; true when the signatures match.
async function verify(req, auth) {
  const url = new URL(req.url, 'http://' + (req.headers.host || 'localhost'));
  const headers = {};
  for (const name of auth.signedHeaders) {
    const value = req.headers[name];
    if (value === undefined) return false;
    headers[name] = Array.isArray(value) ? value.join(',') : value;
  }
  const query = {};
  for (const [k, v] of url.searchParams) {
    if (k in query) query[k] = [].concat(query[k], v);
    else query[k] = v;
  }
  const amzDate = req.headers['x-amz-date'];
  if (!amzDate || !/^\d{8}T\d{6}Z$/.test(amzDate)) return false;
  const signingDate = new Date(
    `${amzDate.slice(0, 4)}-${amzDate.slice(4, 6)}-${amzDate.slice(6, 8)}T` +
      `${amzDate.slice(9, 11)}:${amzDate.slice(11, 13)}:${amzDate.slice(13, 15)}Z`);
  const signer = new SignatureV4({
    credentials: { accessKeyId: keyId, secretAccessKey: secret },
    region: auth.region,
    service: auth.service,
    sha256: Sha256,
    uriEscapePath: false,  // S3 signs the path as sent, not encoded a second time
    applyChecksum: false,
  });
  const signed = await signer.sign(
    { method: req.method, protocol: 'http:', hostname: url.hostname, port: url.port,
      path: url.pathname, query, headers },
    { signingDate, signingRegion: auth.region, signingService: auth.service });
  const theirs = parseAuthorization(signed.headers.authorization || signed.headers.Authorization || '');
  return theirs !== null && theirs.signature === auth.signature &&
         theirs.signedHeaders.join(';') === auth.signedHeaders.join(';');
}

async function main() {
  const s3 = new S3rver({
    directory: process.env.S3_DIRECTORY,
    silent: true,
    configureBuckets: (process.env.S3_BUCKETS || '').split(',').filter(Boolean).map(name => ({ name })),
  });
  await s3.configureBuckets();
  const app = s3.callback();
  const server = http.createServer(async (req, res) => {
    try {
      const url = new URL(req.url, 'http://localhost');
      if (url.searchParams.has('X-Amz-Signature')) {
        return s3Error(res, 403, 'AccessDenied', 'presigned URLs are not supported by this test server');
      }
      const header = req.headers.authorization;
      if (header !== undefined) {
        const auth = parseAuthorization(header);
        if (auth === null) return s3Error(res, 400, 'AuthorizationHeaderMalformed', 'The authorization header is malformed.');
        if (auth.id !== keyId) {
          return s3Error(res, 403, 'InvalidAccessKeyId', 'The AWS Access Key Id you provided does not exist in our records.');
        }
        if (!(await verify(req, auth))) {
          return s3Error(res, 403, 'SignatureDoesNotMatch',
                         'The request signature we calculated does not match the signature you provided. Check your key and signing method.');
        }
        delete req.headers.authorization;  // s3rver serves it as an anonymous request
      }
      app(req, res);
    } catch (err) {
      s3Error(res, 500, 'InternalError', String(err && err.message || err));
    }
  });
  server.listen(port, address, () => console.log(`S3 test server on http://${address}:${port}`));
}

main().catch(err => {
  console.error(err);
  process.exit(1);
});
