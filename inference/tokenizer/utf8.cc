#include "inference/tokenizer/utf8.h"

namespace qwen::tokenizer {

namespace {

// Classifies the bytes at the start of `s`: returns the sequence length when well-formed, 0 when
// ill-formed (with `*subpart` = the length of the maximal ill-formed subpart, at least 1), and
// -1 when `s` ends in the middle of a so-far valid sequence.
int Scan(absl::string_view s, int* subpart) {
  const auto b0 = static_cast<uint8_t>(s[0]);
  *subpart = 1;
  if (b0 < 0x80) return 1;
  int len;
  uint8_t lo = 0x80, hi = 0xBF;  // allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) lo = 0xA0;  // no overlong forms
    if (b0 == 0xED) hi = 0x9F;  // no surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) lo = 0x90;
    if (b0 == 0xF4) hi = 0x8F;  // nothing above U+10FFFF
  } else {
    return 0;
  }
  for (int k = 1; k < len; ++k) {
    if (static_cast<size_t>(k) >= s.size()) return -1;
    const auto b = static_cast<uint8_t>(s[k]);
    if (k == 1 ? (b < lo || b > hi) : (b < 0x80 || b > 0xBF)) {
      *subpart = k;
      return 0;
    }
  }
  return len;
}

}  // namespace

int Utf8SequenceLength(absl::string_view s) {
  int subpart;
  return Scan(s, &subpart);
}

size_t AppendUtf8Lossy(absl::string_view bytes, bool final, std::string* out) {
  size_t i = 0;
  const size_t n = bytes.size();
  while (i < n) {
    // Fast path over ASCII runs.
    size_t j = i;
    while (j < n && static_cast<uint8_t>(bytes[j]) < 0x80) ++j;
    if (j > i) {
      out->append(bytes.data() + i, j - i);
      i = j;
      if (i == n) break;
    }
    int subpart;
    const int len = Scan(bytes.substr(i), &subpart);
    if (len > 0) {
      out->append(bytes.data() + i, len);
      i += len;
      continue;
    }
    if (len < 0 && !final) break;  // wait for the rest of the sequence
    out->append(kReplacementChar.data(), kReplacementChar.size());
    i = len < 0 ? n : i + subpart;
  }
  return i;
}

std::string ToValidUtf8(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  AppendUtf8Lossy(bytes, /*final=*/true, &out);
  return out;
}

bool IsValidUtf8(absl::string_view bytes) {
  size_t i = 0;
  while (i < bytes.size()) {
    if (static_cast<uint8_t>(bytes[i]) < 0x80) {
      ++i;
      continue;
    }
    const int len = Utf8SequenceLength(bytes.substr(i));
    if (len <= 0) return false;
    i += len;
  }
  return true;
}

char32_t DecodeUtf8(absl::string_view s, size_t* pos) {
  const auto b0 = static_cast<uint8_t>(s[*pos]);
  if (b0 < 0x80) {
    ++*pos;
    return b0;
  }
  int len = b0 >= 0xF0 ? 4 : b0 >= 0xE0 ? 3 : 2;
  char32_t cp = b0 & (0x7F >> len);
  for (int k = 1; k < len && *pos + k < s.size(); ++k) {
    cp = (cp << 6) | (static_cast<uint8_t>(s[*pos + k]) & 0x3F);
  }
  *pos += len;
  return cp;
}

void AppendUtf8(char32_t cp, std::string* out) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

}  // namespace qwen::tokenizer
