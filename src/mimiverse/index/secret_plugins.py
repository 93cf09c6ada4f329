"""detect-secrets plugins for shapes its 1.5 release does not know (its own plugin API)."""

from __future__ import annotations

import re

from detect_secrets.plugins.base import RegexBasedDetector


class HuggingFaceToken(RegexBasedDetector):
    secret_type = "Hugging Face Token"
    denylist = (re.compile(r"\bhf_[A-Za-z0-9]{30,}\b"),)


class NpmAccessToken(RegexBasedDetector):
    # detect-secrets' NpmDetector only knows `_authToken=` lines of an .npmrc.
    secret_type = "npm Access Token"
    denylist = (re.compile(r"\bnpm_[A-Za-z0-9]{36}\b"),)


class GitHubFineGrainedToken(RegexBasedDetector):
    secret_type = "GitHub Fine-grained Token"
    denylist = (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{22,255}\b"),)


class GoogleApiKey(RegexBasedDetector):
    secret_type = "Google API Key"
    denylist = (re.compile(r"\bAIza[0-9A-Za-z_\-]{35}\b"),)


class ApiKey(RegexBasedDetector):
    # OpenAI project keys, Anthropic and other `sk-` keys (detect-secrets only knows
    # OpenAI's legacy shape).
    secret_type = "API Key"
    denylist = (re.compile(r"\bsk-(?:[A-Za-z0-9]+-)*[A-Za-z0-9_\-]{20,}\b"),)


class AwsSecretKeyUnquoted(RegexBasedDetector):
    # detect-secrets finds an AWS secret key by its variable name only when quoted; shell
    # exports, .env and INI files assign it bare.
    secret_type = "AWS Secret Key"
    denylist = (re.compile(
        r"aws.{0,20}?(?:secret|key).{0,20}?[=:]\s*['\"]?([0-9a-zA-Z/+]{40})(?![0-9a-zA-Z/+])",
        re.IGNORECASE,
    ),)


class EncryptedPrivateKey(RegexBasedDetector):
    # PKCS#8 encrypted keys: detect-secrets' PrivateKeyDetector lists every other BEGIN line.
    secret_type = "Private Key"
    denylist = (re.compile(r"BEGIN ENCRYPTED PRIVATE KEY"),)
