#include "inference/chat/jinja_lexer.h"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"
#include "inference/tokenizer/utf8.h"

namespace qwen::chat::jinja {

absl::Status SyntaxError(int line, absl::string_view message) {
  return absl::FailedPreconditionError(
      absl::StrCat("template syntax error (line ", line, "): ", message));
}

namespace {

class Lexer {
 public:
  Lexer(absl::string_view source, const Options& options) : src_(source), options_(options) {}

  absl::StatusOr<std::vector<Token>> Run() {
    // Jinja drops one trailing newline of the template (keep_trailing_newline=False).
    if (!src_.empty() && src_.back() == '\n') {
      src_.remove_suffix(1);
      if (!src_.empty() && src_.back() == '\r') src_.remove_suffix(1);
    }
    size_t pos = 0;
    bool trim_next_newline = false;
    bool strip_next_all = false;
    while (pos <= src_.size()) {
      size_t at = FindTagStart(pos);
      std::string text(src_.substr(pos, at - pos));
      if (strip_next_all) {
        size_t k = 0;
        while (k < text.size() && absl::ascii_isspace(static_cast<unsigned char>(text[k]))) ++k;
        text.erase(0, k);
      } else if (trim_next_newline) {
        if (absl::StartsWith(text, "\r\n")) {
          text.erase(0, 2);
        } else if (absl::StartsWith(text, "\n")) {
          text.erase(0, 1);
        }
      }
      if (at >= src_.size()) {
        EmitText(std::move(text), LineAt(pos));
        break;
      }
      const char kind = src_[at + 1];  // '{', '%' or '#'
      const char modifier = at + 2 < src_.size() ? src_[at + 2] : '\0';
      if (modifier == '-') {
        while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.back()))) {
          text.pop_back();
        }
      } else if (options_.lstrip_blocks && kind != '{' && modifier != '+') {
        // Blanks between the start of a line and a block tag go (lstrip_blocks). The tail of
        // `text` is still the source just before the tag, so the source says where the line
        // starts.
        size_t k = text.size();
        while (k > 0 && (text[k - 1] == ' ' || text[k - 1] == '\t')) --k;
        const size_t blanks_start = at - (text.size() - k);
        if (k < text.size() && (blanks_start == 0 || src_[blanks_start - 1] == '\n')) {
          text.erase(k);
        }
      }
      EmitText(std::move(text), LineAt(pos));
      size_t inner = at + 2 + ((modifier == '-' || modifier == '+') ? 1 : 0);
      int line = LineAt(at);
      if (kind == '#') {
        size_t end = src_.find("#}", inner);
        if (end == absl::string_view::npos) return SyntaxError(line, "unclosed comment");
        const bool strip = end > inner && src_[end - 1] == '-';
        strip_next_all = strip;
        trim_next_newline = !strip && options_.trim_blocks;
        pos = end + 2;
        continue;
      }
      tokens_.push_back({kind == '{' ? Tok::kVarBegin : Tok::kBlockBegin, "", line});
      size_t block_start = tokens_.size();
      ASSIGN_OR_RETURN(size_t after,
                       LexTag(inner, kind == '{' ? '}' : '%', &strip_next_all, &trim_next_newline));
      if (kind == '{') trim_next_newline = false;  // trim_blocks is for block tags only
      pos = after;
      // {% raw %}...{% endraw %}: the body is text.
      if (kind == '%' && tokens_.size() == block_start + 2 &&
          tokens_[block_start].type == Tok::kName && tokens_[block_start].text == "raw") {
        tokens_.resize(block_start - 1);
        ASSIGN_OR_RETURN(pos, LexRaw(pos, line, &strip_next_all, &trim_next_newline));
      }
    }
    tokens_.push_back({Tok::kEof, "", LineAt(src_.size())});
    return std::move(tokens_);
  }

 private:
  size_t FindTagStart(size_t pos) const {
    while (true) {
      size_t at = src_.find('{', pos);
      if (at == absl::string_view::npos || at + 1 >= src_.size()) return src_.size();
      const char c = src_[at + 1];
      if (c == '{' || c == '%' || c == '#') return at;
      pos = at + 1;
    }
  }

  int LineAt(size_t pos) {
    while (line_pos_ < pos && line_pos_ < src_.size()) {
      if (src_[line_pos_] == '\n') ++line_;
      ++line_pos_;
    }
    return line_;
  }

  void EmitText(std::string text, int line) {
    if (text.empty()) return;
    // Jinja turns \r\n in template data into \n.
    std::string normalized;
    normalized.reserve(text.size());
    for (size_t k = 0; k < text.size(); ++k) {
      if (text[k] == '\r' && k + 1 < text.size() && text[k + 1] == '\n') continue;
      normalized.push_back(text[k]);
    }
    tokens_.push_back({Tok::kText, std::move(normalized), line});
  }

  // Lexes expression tokens from `pos` up to the closing "}}" / "%}" (optionally "-" or "+"
  // first). Returns the position after the closing delimiter.
  absl::StatusOr<size_t> LexTag(size_t pos, char close, bool* strip_next_all,
                                bool* trim_next_newline) {
    int depth = 0;  // (), [], {} nesting: "}}" inside a dict literal is not the end
    while (true) {
      while (pos < src_.size() && absl::ascii_isspace(static_cast<unsigned char>(src_[pos]))) ++pos;
      const int line = LineAt(pos);
      if (pos >= src_.size()) return SyntaxError(line, "unclosed tag");
      const char c = src_[pos];
      if (depth == 0) {
        for (char mod : {'-', '+', '\0'}) {
          size_t p = pos;
          if (mod != '\0') {
            if (src_[p] != mod) continue;
            ++p;
          }
          if (p + 1 < src_.size() && src_[p] == close && src_[p + 1] == '}') {
            tokens_.push_back({close == '}' ? Tok::kVarEnd : Tok::kBlockEnd, "", line});
            *strip_next_all = mod == '-';
            *trim_next_newline = mod == '\0' && options_.trim_blocks;
            return p + 2;
          }
        }
      }
      if (c == '\'' || c == '"') {
        std::string value;
        size_t p = pos + 1;
        bool closed = false;
        while (p < src_.size()) {
          char d = src_[p];
          if (d == c) {
            closed = true;
            ++p;
            break;
          }
          if (d == '\\' && p + 1 < src_.size()) {
            char e = src_[p + 1];
            p += 2;
            switch (e) {
              case 'n':
                value.push_back('\n');
                break;
              case 't':
                value.push_back('\t');
                break;
              case 'r':
                value.push_back('\r');
                break;
              case 'b':
                value.push_back('\b');
                break;
              case 'f':
                value.push_back('\f');
                break;
              case '0':
                value.push_back('\0');
                break;
              case '\\':
                value.push_back('\\');
                break;
              case '\'':
                value.push_back('\'');
                break;
              case '"':
                value.push_back('"');
                break;
              case '\n':
                break;
              case 'u':
              case 'x': {
                const int digits = e == 'u' ? 4 : 2;
                uint32_t cp = 0;
                int k = 0;
                for (; k < digits && p + k < src_.size() &&
                       absl::ascii_isxdigit(static_cast<unsigned char>(src_[p + k]));
                     ++k) {
                  const char h = src_[p + k];
                  cp = cp * 16 + (h <= '9' ? h - '0' : (h | 0x20) - 'a' + 10);
                }
                if (k != digits || (cp >= 0xD800 && cp <= 0xDFFF)) {
                  return SyntaxError(line, "bad escape in string literal");
                }
                p += digits;
                tokenizer::AppendUtf8(cp, &value);
                break;
              }
              default:
                value.push_back('\\');
                value.push_back(e);
            }
            continue;
          }
          value.push_back(d);
          ++p;
        }
        if (!closed) return SyntaxError(line, "unterminated string literal");
        tokens_.push_back({Tok::kString, std::move(value), line});
        pos = p;
        continue;
      }
      if (absl::ascii_isdigit(static_cast<unsigned char>(c))) {
        size_t p = pos;
        while (p < src_.size() &&
               (absl::ascii_isdigit(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) {
          ++p;
        }
        bool is_float = false;
        if (p + 1 < src_.size() && src_[p] == '.' &&
            absl::ascii_isdigit(static_cast<unsigned char>(src_[p + 1]))) {
          is_float = true;
          ++p;
          while (p < src_.size() && absl::ascii_isdigit(static_cast<unsigned char>(src_[p]))) ++p;
        }
        if (p < src_.size() && (src_[p] == 'e' || src_[p] == 'E')) {
          size_t q = p + 1;
          if (q < src_.size() && (src_[q] == '+' || src_[q] == '-')) ++q;
          if (q < src_.size() && absl::ascii_isdigit(static_cast<unsigned char>(src_[q]))) {
            is_float = true;
            p = q;
            while (p < src_.size() && absl::ascii_isdigit(static_cast<unsigned char>(src_[p]))) ++p;
          }
        }
        std::string text;
        for (size_t k = pos; k < p; ++k) {
          if (src_[k] != '_') text.push_back(src_[k]);
        }
        Token t{is_float ? Tok::kFloat : Tok::kInt, text, line};
        if (is_float) {
          t.float_value = std::strtod(text.c_str(), nullptr);
        } else {
          errno = 0;
          t.int_value = std::strtoll(text.c_str(), nullptr, 10);
          if (errno == ERANGE) {
            t.type = Tok::kFloat;
            t.float_value = std::strtod(text.c_str(), nullptr);
          }
        }
        tokens_.push_back(std::move(t));
        pos = p;
        continue;
      }
      if (absl::ascii_isalpha(static_cast<unsigned char>(c)) || c == '_') {
        size_t p = pos;
        while (p < src_.size() &&
               (absl::ascii_isalnum(static_cast<unsigned char>(src_[p])) || src_[p] == '_')) {
          ++p;
        }
        tokens_.push_back({Tok::kName, std::string(src_.substr(pos, p - pos)), line});
        pos = p;
        continue;
      }
      static const char* const kOps[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*",
                                         "/",  "%",  "~",  "<",  ">",  "=",  "(", ")", "[",
                                         "]",  "{",  "}",  ",",  ".",  ":",  "|"};
      bool matched = false;
      for (const char* op : kOps) {
        const size_t len = std::char_traits<char>::length(op);
        if (src_.substr(pos, len) == op) {
          if (len == 1) {
            if (c == '(' || c == '[' || c == '{') ++depth;
            if ((c == ')' || c == ']' || c == '}') && depth > 0) --depth;
          }
          tokens_.push_back({Tok::kOp, op, line});
          pos += len;
          matched = true;
          break;
        }
      }
      if (!matched) {
        return SyntaxError(line, absl::StrCat("unexpected character '", std::string(1, c), "'"));
      }
    }
  }

  absl::StatusOr<size_t> LexRaw(size_t pos, int line, bool* strip_next_all,
                                bool* trim_next_newline) {
    size_t search = pos;
    while (true) {
      size_t at = src_.find("{%", search);
      if (at == absl::string_view::npos) return SyntaxError(line, "unclosed raw block");
      size_t p = at + 2;
      bool strip_before = false;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) {
        strip_before = src_[p] == '-';
        ++p;
      }
      while (p < src_.size() && absl::ascii_isspace(static_cast<unsigned char>(src_[p]))) ++p;
      if (src_.substr(p, 6) != "endraw") {
        search = at + 2;
        continue;
      }
      p += 6;
      while (p < src_.size() && absl::ascii_isspace(static_cast<unsigned char>(src_[p]))) ++p;
      bool strip_after = false;
      if (p < src_.size() && (src_[p] == '-' || src_[p] == '+')) {
        strip_after = src_[p] == '-';
        ++p;
      }
      if (src_.substr(p, 2) != "%}") return SyntaxError(line, "malformed endraw");
      std::string text(src_.substr(pos, at - pos));
      if (*strip_next_all) {
        size_t k = 0;
        while (k < text.size() && absl::ascii_isspace(static_cast<unsigned char>(text[k]))) ++k;
        text.erase(0, k);
      } else if (*trim_next_newline && absl::StartsWith(text, "\n")) {
        text.erase(0, 1);
      }
      if (strip_before) {
        while (!text.empty() && absl::ascii_isspace(static_cast<unsigned char>(text.back()))) {
          text.pop_back();
        }
      }
      EmitText(std::move(text), line);
      *strip_next_all = strip_after;
      *trim_next_newline = !strip_after && options_.trim_blocks;
      return p + 2;
    }
  }

  absl::string_view src_;
  const Options& options_;
  std::vector<Token> tokens_;
  int line_ = 1;
  size_t line_pos_ = 0;
};

}  // namespace

absl::StatusOr<std::vector<Token>> Lex(absl::string_view source, const Options& options) {
  Lexer lexer(source, options);
  return lexer.Run();
}

}  // namespace qwen::chat::jinja
