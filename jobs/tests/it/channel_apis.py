"""Loopback stand-ins for the channels' bill APIs, for reckon's fetcher tests.

They implement the documented protocols with an independent implementation (Python's
`cryptography`), so a test passes only when reckon and this file agree on the bytes signed:

- Alipay OpenAPI gateway: `alipay.data.dataservice.bill.downloadurl.query`, RSA2
  (SHA256withRSA) over the sorted `k=v&...` parameters; the answer's
  `..._response` object is signed with Alipay's key; `isp.bill_not_exist` when there is no
  bill; a short-lived download URL.
- WeChat Pay API v3: `GET /v3/bill/tradebill`, the `WECHATPAY2-SHA256-RSA2048` Authorization
  header over `METHOD\\nURL\\nTIMESTAMP\\nNONCE\\nBODY\\n`; answers signed with the platform key
  (`Wechatpay-Timestamp/Nonce/Signature/Serial`); `download_url` and the SHA1 `hash_value`;
  `NO_STATEMENT_EXIST` when there is no bill; the download needs the same Authorization.
- A plain file server behind bearer or basic credentials (the HTTPS fetcher).

Keys are generated at start and written to --keys; nothing is committed. Bills are served
from --bills: `alipay/<bill_type>/<date>/<file>`, `wechat/<date>/<file>`, `files/<path>`.
`POST /_control` sets faults (JSON: fail, tamper, bad_hash, reject); `GET /_requests` lists
what was asked. Prints `READY <port>` once listening.
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import secrets
import sys
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

ALIPAY_APP_ID = "2021000000000001"
WECHAT_MCHID = "1900000109"
METHOD = "alipay.data.dataservice.bill.downloadurl.query"
CST = datetime.timezone(datetime.timedelta(hours=8))


def new_key():
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def sign(key, data: bytes) -> str:
    return base64.b64encode(key.sign(data, padding.PKCS1v15(), hashes.SHA256())).decode()


def verify(public, data: bytes, sig_b64: str) -> bool:
    try:
        public.verify(base64.b64decode(sig_b64), data, padding.PKCS1v15(), hashes.SHA256())
        return True
    except Exception:
        return False


class State:
    def __init__(self, bills, keys_dir):
        self.bills = bills
        self.lock = threading.Lock()
        self.faults = {"fail": 0, "tamper": False, "bad_hash": False, "reject": None}
        self.requests = []
        self.tokens = {}
        # The merchant's keys (reckon signs with them) and the channels' (they sign answers).
        self.alipay_app = new_key()
        self.alipay = new_key()
        self.wechat_merchant = new_key()
        self.wechat_platform = new_key()
        self.merchant_serial = secrets.token_hex(20).upper()
        now = datetime.datetime.now(datetime.timezone.utc)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Tenpay.com Root CA test")])
        self.platform_cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(self.wechat_platform.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=365))
            .sign(self.wechat_platform, hashes.SHA256())
        )
        self.platform_serial = format(self.platform_cert.serial_number, "X")
        self.write_keys(keys_dir)

    def write_keys(self, d):
        os.makedirs(d, exist_ok=True)
        pem8 = lambda k: k.private_bytes(  # noqa: E731
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        spki = lambda k, enc: k.public_key().public_bytes(  # noqa: E731
            enc, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        files = {
            # Alipay's key tool gives bare base64: PKCS#1 for the app key, SPKI for Alipay's.
            "alipay_app_private.b64": base64.b64encode(
                self.alipay_app.private_bytes(
                    serialization.Encoding.DER,
                    serialization.PrivateFormat.TraditionalOpenSSL,
                    serialization.NoEncryption(),
                )
            ),
            "alipay_app_private.pem": pem8(self.alipay_app),
            "alipay_public.b64": base64.b64encode(spki(self.alipay, serialization.Encoding.DER)),
            "wechat_merchant_key.pem": pem8(self.wechat_merchant),
            "wechat_merchant_serial.txt": self.merchant_serial.encode(),
            "wechat_platform_cert.pem": self.platform_cert.public_bytes(serialization.Encoding.PEM),
            "wechat_platform_public.pem": spki(self.wechat_platform, serialization.Encoding.PEM),
            "wechat_platform_serial.txt": self.platform_serial.encode(),
        }
        for n, b in files.items():
            with open(os.path.join(d, n), "wb") as f:
                f.write(b)

    def bill(self, *parts):
        d = os.path.join(self.bills, *parts)
        if not os.path.isdir(d):
            return None
        names = sorted(os.listdir(d))
        return os.path.join(d, names[0]) if names else None


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: State = None

    def log_message(self, *args):
        pass

    # --- plumbing -------------------------------------------------------------------------
    def body(self) -> bytes:
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def send(self, status, body: bytes, headers=None, ctype="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def record(self, **kw):
        with self.state.lock:
            self.state.requests.append({"method": self.command, "path": self.path, **kw})

    def injected_failure(self) -> bool:
        with self.state.lock:
            if self.state.faults["fail"] > 0:
                self.state.faults["fail"] -= 1
                failing = True
            else:
                failing = False
        if failing:
            self.record(answered=503)
            self.send(503, b'{"code":"SYSTEM_ERROR","message":"busy, try again"}')
        return failing

    def do_GET(self):
        self.route(b"")

    def do_POST(self):
        self.route(self.body())

    def route(self, body):
        path = urllib.parse.urlsplit(self.path).path
        if path == "/_control":
            with self.state.lock:
                self.state.faults.update(json.loads(body or b"{}"))
            return self.send(200, b"{}")
        if path == "/_requests":
            with self.state.lock:
                return self.send(200, json.dumps(self.state.requests).encode())
        if path == "/gateway.do":
            return self.alipay_gateway(body)
        if path == "/alipay/download":
            return self.download()
        if path == "/v3/bill/tradebill":
            return self.wechat_tradebill()
        if path == "/v3/billdownload/file":
            return self.wechat_download()
        if path.startswith("/files/"):
            return self.files(path[len("/files/"):])
        self.send(404, b'{"code":"NOT_FOUND"}')

    def token_for(self, path, ttl=30):
        t = secrets.token_urlsafe(16)
        with self.state.lock:
            self.state.tokens[t] = (path, time.time() + ttl)
        return t

    def file_for_token(self):
        q = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        t = (q.get("token") or [""])[0]
        with self.state.lock:
            path, until = self.state.tokens.get(t, (None, 0))
        return path if until > time.time() else None

    def serve_file(self, path, corrupt=False):
        with open(path, "rb") as f:
            data = f.read()
        if corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        name = os.path.basename(path)
        self.send(
            200,
            data,
            {"Content-Disposition": f"attachment; filename=\"{name}\""},
            "application/octet-stream",
        )

    # --- Alipay ---------------------------------------------------------------------------
    def alipay_answer(self, key, inner: dict):
        text = json.dumps(inner, ensure_ascii=False, separators=(",", ":"))
        sig = sign(self.state.alipay, text.encode())
        if self.state.faults["tamper"]:
            sig = sign(new_key(), text.encode())
        body = '{"' + key + '":' + text + ',"sign":"' + sig + '"}'
        self.send(200, body.encode(), ctype="text/html;charset=utf-8")

    def alipay_gateway(self, body):
        if self.injected_failure():
            return
        params = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        params.update(dict(urllib.parse.parse_qsl(body.decode())))
        signed = "&".join(
            f"{k}={params[k]}" for k in sorted(params) if k != "sign" and params[k] != ""
        )
        ok = verify(self.state.alipay_app.public_key(), signed.encode(), params.get("sign", ""))
        self.record(signature_ok=ok, params=sorted(params))
        key = METHOD.replace(".", "_") + "_response"
        if params.get("app_id") != ALIPAY_APP_ID or params.get("sign_type") != "RSA2" or not ok:
            return self.alipay_answer(
                "error_response",
                {
                    "code": "40002",
                    "msg": "Invalid Arguments",
                    "sub_code": "isv.invalid-signature",
                    "sub_msg": "验签出错",
                },
            )
        ts = datetime.datetime.strptime(params.get("timestamp", ""), "%Y-%m-%d %H:%M:%S")
        if abs((datetime.datetime.now(CST).replace(tzinfo=None) - ts).total_seconds()) > 600:
            return self.alipay_answer(
                key, {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-timestamp"}
            )
        if params.get("method") != METHOD:
            return self.alipay_answer(
                key, {"code": "40002", "msg": "Invalid Arguments", "sub_code": "isv.invalid-method"}
            )
        biz = json.loads(params.get("biz_content", "{}"))
        reject = self.state.faults["reject"]
        if reject:
            return self.alipay_answer(
                key,
                {"code": "40004", "msg": "Business Failed", "sub_code": reject["code"],
                 "sub_msg": reject.get("message", "")},
            )
        path = self.state.bill("alipay", biz.get("bill_type", ""), biz.get("bill_date", ""))
        if not path:
            return self.alipay_answer(
                key,
                {"code": "40004", "msg": "Business Failed", "sub_code": "isp.bill_not_exist",
                 "sub_msg": "账单不存在"},
            )
        port = self.server.server_address[1]
        url = f"http://127.0.0.1:{port}/alipay/download?token={self.token_for(path)}"
        self.alipay_answer(key, {"code": "10000", "msg": "Success", "bill_download_url": url})

    def download(self):
        if self.injected_failure():
            return
        path = self.file_for_token()
        self.record(token_ok=path is not None)
        if not path:
            return self.send(403, b"expired", ctype="text/plain")
        self.serve_file(path, corrupt=self.state.faults["bad_hash"])

    # --- WeChat Pay v3 --------------------------------------------------------------------
    def wechat_auth_ok(self) -> bool:
        auth = self.headers.get("Authorization", "")
        scheme, _, rest = auth.partition(" ")
        fields = {}
        for part in rest.split(","):
            k, _, v = part.strip().partition("=")
            fields[k] = v.strip('"')
        msg = f"{self.command}\n{self.path}\n{fields.get('timestamp')}\n{fields.get('nonce_str')}\n\n"
        fresh = abs(time.time() - int(fields.get("timestamp") or 0)) < 300
        return (
            scheme == "WECHATPAY2-SHA256-RSA2048"
            and fields.get("mchid") == WECHAT_MCHID
            and fields.get("serial_no") == self.state.merchant_serial
            and fresh
            and verify(self.state.wechat_merchant.public_key(), msg.encode(), fields.get("signature", ""))
        )

    def wechat_answer(self, status, obj):
        body = json.dumps(obj, separators=(",", ":")).encode()
        ts, nonce = str(int(time.time())), secrets.token_hex(16)
        text = f"{ts}\n{nonce}\n{body.decode()}\n".encode()
        key = new_key() if self.state.faults["tamper"] else self.state.wechat_platform
        self.send(
            status,
            body,
            {
                "Wechatpay-Timestamp": ts,
                "Wechatpay-Nonce": nonce,
                "Wechatpay-Signature": sign(key, text),
                "Wechatpay-Serial": self.state.platform_serial,
                "Request-ID": secrets.token_hex(8),
            },
        )

    def wechat_tradebill(self):
        if self.injected_failure():
            return
        ok = self.wechat_auth_ok()
        self.record(signature_ok=ok)
        if not ok:
            return self.wechat_answer(401, {"code": "SIGN_ERROR", "message": "签名错误"})
        q = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(self.path).query))
        reject = self.state.faults["reject"]
        if reject:
            return self.wechat_answer(reject.get("status", 400),
                                      {"code": reject["code"], "message": reject.get("message", "")})
        path = self.state.bill("wechat", q.get("bill_date", ""))
        if not path:
            return self.wechat_answer(
                400, {"code": "NO_STATEMENT_EXIST", "message": "The statement does not exist"}
            )
        with open(path, "rb") as f:
            sha1 = hashlib.sha1(f.read()).hexdigest()
        if self.state.faults["bad_hash"]:
            sha1 = hashlib.sha1(b"something else").hexdigest()
        port = self.server.server_address[1]
        url = f"http://127.0.0.1:{port}/v3/billdownload/file?token={self.token_for(path)}"
        self.wechat_answer(200, {"hash_type": "SHA1", "hash_value": sha1, "download_url": url})

    def wechat_download(self):
        if self.injected_failure():
            return
        ok = self.wechat_auth_ok()
        path = self.file_for_token()
        self.record(signature_ok=ok, token_ok=path is not None)
        if not ok:
            return self.wechat_answer(401, {"code": "SIGN_ERROR", "message": "签名错误"})
        if not path:
            return self.wechat_answer(400, {"code": "PARAM_ERROR", "message": "token expired"})
        self.serve_file(path)

    # --- a plain file server behind credentials -------------------------------------------
    def files(self, rel):
        if self.injected_failure():
            return
        auth = self.headers.get("Authorization", "")
        token, user, pw = (os.environ.get(k, "") for k in ("FILES_TOKEN", "FILES_USER", "FILES_PASSWORD"))
        basic = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
        ok = (token and auth == f"Bearer {token}") or (user and auth == basic)
        self.record(auth_ok=bool(ok))
        if not ok:
            return self.send(401, b'{"error":"unauthorized"}')
        path = os.path.join(self.state.bills, "files", urllib.parse.unquote(rel))
        if not os.path.isfile(path):
            return self.send(404, b'{"error":"not found"}')
        self.serve_file(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bills", required=True)
    ap.add_argument("--keys", required=True)
    a = ap.parse_args()
    Handler.state = State(a.bills, a.keys)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"READY {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
