#include "inference/chat/jinja_parser.h"

#include <algorithm>
#include <string>
#include <utility>

#include "absl/strings/str_cat.h"
#include "inference/common/status_macros.h"

namespace qwen::chat::jinja {
namespace {

class Parser {
 public:
  Parser(std::vector<Token> tokens, const Limits& limits)
      : tokens_(std::move(tokens)), limits_(limits) {}

  absl::StatusOr<std::unique_ptr<SequenceNode>> ParseTemplate() {
    auto root = std::make_unique<SequenceNode>(1);
    std::string end;
    RETURN_IF_ERROR(ParseBody({}, &root->body, &end));
    return root;
  }

 private:
  const Token& Peek(size_t ahead = 0) const {
    return tokens_[std::min(pos_ + ahead, tokens_.size() - 1)];
  }
  const Token& Next() {
    const Token& t = tokens_[pos_];
    if (pos_ + 1 < tokens_.size()) ++pos_;
    return t;
  }
  bool IsOp(const char* op, size_t ahead = 0) const {
    return Peek(ahead).type == Tok::kOp && Peek(ahead).text == op;
  }
  bool IsName(const char* name, size_t ahead = 0) const {
    return Peek(ahead).type == Tok::kName && Peek(ahead).text == name;
  }
  absl::Status Expect(const char* op) {
    if (!IsOp(op)) return Unexpected(absl::StrCat("expected '", op, "'"));
    Next();
    return absl::OkStatus();
  }
  absl::Status Unexpected(absl::string_view what) const {
    const Token& t = Peek();
    std::string got;
    switch (t.type) {
      case Tok::kEof:
        got = "end of template";
        break;
      case Tok::kBlockEnd:
        got = "end of tag";
        break;
      case Tok::kVarEnd:
        got = "end of expression";
        break;
      case Tok::kText:
        got = "text";
        break;
      case Tok::kString:
        got = "a string";
        break;
      default:
        got = absl::StrCat("'", t.text, "'");
    }
    return SyntaxError(t.line, absl::StrCat(what, ", got ", got));
  }
  absl::StatusOr<std::string> ExpectName() {
    if (Peek().type != Tok::kName) return Unexpected("expected a name");
    return Next().text;
  }
  absl::Status ExpectBlockEnd() {
    if (Peek().type != Tok::kBlockEnd) return Unexpected("expected end of tag");
    Next();
    return absl::OkStatus();
  }

  struct DepthGuard {
    explicit DepthGuard(int* d) : depth(d) { ++*depth; }
    ~DepthGuard() { --*depth; }
    int* depth;
  };
  absl::Status CheckDepth() const {
    if (depth_ > limits_.max_parse_depth) {
      return absl::ResourceExhaustedError(absl::StrCat(
          "template nested deeper than ", limits_.max_parse_depth, " (line ", Peek().line, ")"));
    }
    return absl::OkStatus();
  }

  // Parses nodes until a block tag whose name is in `ends` (left unconsumed after its name is
  // stored in *end) or, with no `ends`, the end of the template.
  absl::Status ParseBody(const std::vector<std::string>& ends, std::vector<NodePtr>* body,
                         std::string* end) {
    DepthGuard guard(&depth_);
    RETURN_IF_ERROR(CheckDepth());
    while (true) {
      const Token& t = Peek();
      switch (t.type) {
        case Tok::kEof:
          if (!ends.empty()) {
            return SyntaxError(
                t.line, absl::StrCat("unexpected end of template, expected '", ends.back(), "'"));
          }
          return absl::OkStatus();
        case Tok::kText:
          body->push_back(std::make_unique<TextNode>(t.line, t.text));
          Next();
          break;
        case Tok::kVarBegin: {
          Next();
          ASSIGN_OR_RETURN(ExprPtr e, ParseExpression());
          if (Peek().type != Tok::kVarEnd) return Unexpected("expected '}}'");
          Next();
          body->push_back(std::make_unique<OutputNode>(t.line, std::move(e)));
          break;
        }
        case Tok::kBlockBegin: {
          Next();
          const Token& name = Peek();
          if (name.type != Tok::kName) return Unexpected("expected a tag name");
          for (const std::string& e : ends) {
            if (name.text == e) {
              *end = e;
              Next();
              return absl::OkStatus();
            }
          }
          ASSIGN_OR_RETURN(NodePtr node, ParseStatement());
          if (node != nullptr) body->push_back(std::move(node));
          break;
        }
        default:
          return Unexpected("unexpected token");
      }
    }
  }

  absl::StatusOr<NodePtr> ParseStatement() {
    const Token tag = Next();
    const std::string& name = tag.text;
    if (name == "if") return ParseIf(tag.line);
    if (name == "for") return ParseFor(tag.line);
    if (name == "set") return ParseSet(tag.line);
    if (name == "macro") return ParseMacro(tag.line);
    if (name == "break" || name == "continue") {
      if (loop_depth_ == 0)
        return SyntaxError(tag.line, absl::StrCat("'", name, "' outside a loop"));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return NodePtr(
          std::make_unique<FlowNode>(tag.line, name == "break" ? Flow::kBreak : Flow::kContinue));
    }
    if (name == "generation") {
      RETURN_IF_ERROR(ExpectBlockEnd());
      auto seq = std::make_unique<SequenceNode>(tag.line);
      std::string end;
      RETURN_IF_ERROR(ParseBody({"endgeneration"}, &seq->body, &end));
      RETURN_IF_ERROR(ExpectBlockEnd());
      return NodePtr(std::move(seq));
    }
    return SyntaxError(tag.line, absl::StrCat("unsupported tag '", name, "'"));
  }

  absl::StatusOr<NodePtr> ParseIf(int line) {
    auto node = std::make_unique<IfNode>(line);
    ASSIGN_OR_RETURN(ExprPtr cond, ParseExpression());
    RETURN_IF_ERROR(ExpectBlockEnd());
    while (true) {
      std::vector<NodePtr> body;
      std::string end;
      RETURN_IF_ERROR(ParseBody({"elif", "else", "endif"}, &body, &end));
      node->branches.emplace_back(std::move(cond), std::move(body));
      if (end == "endif") break;
      if (end == "else") {
        RETURN_IF_ERROR(ExpectBlockEnd());
        std::vector<NodePtr> else_body;
        RETURN_IF_ERROR(ParseBody({"endif"}, &else_body, &end));
        node->branches.emplace_back(nullptr, std::move(else_body));
        break;
      }
      ASSIGN_OR_RETURN(cond, ParseExpression());
      RETURN_IF_ERROR(ExpectBlockEnd());
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    return NodePtr(std::move(node));
  }

  absl::StatusOr<std::vector<std::string>> ParseTargets() {
    std::vector<std::string> names;
    const bool paren = IsOp("(");
    if (paren) Next();
    while (true) {
      ASSIGN_OR_RETURN(std::string n, ExpectName());
      names.push_back(std::move(n));
      if (!IsOp(",")) break;
      Next();
    }
    if (paren) RETURN_IF_ERROR(Expect(")"));
    return names;
  }

  absl::StatusOr<NodePtr> ParseFor(int line) {
    auto node = std::make_unique<ForNode>(line);
    ASSIGN_OR_RETURN(node->targets, ParseTargets());
    if (!IsName("in")) return Unexpected("expected 'in'");
    Next();
    ASSIGN_OR_RETURN(node->iter, ParseExpression(/*allow_conditional=*/false));
    if (IsName("if")) {
      Next();
      ASSIGN_OR_RETURN(node->filter, ParseExpression());
    }
    if (IsName("recursive")) return SyntaxError(line, "recursive loops are not supported");
    RETURN_IF_ERROR(ExpectBlockEnd());
    ++loop_depth_;
    std::string end;
    absl::Status st = ParseBody({"else", "endfor"}, &node->body, &end);
    --loop_depth_;
    RETURN_IF_ERROR(st);
    if (end == "else") {
      RETURN_IF_ERROR(ExpectBlockEnd());
      RETURN_IF_ERROR(ParseBody({"endfor"}, &node->else_body, &end));
    }
    RETURN_IF_ERROR(ExpectBlockEnd());
    return NodePtr(std::move(node));
  }

  absl::StatusOr<NodePtr> ParseSet(int line) {
    auto node = std::make_unique<SetNode>(line);
    ASSIGN_OR_RETURN(std::string first, ExpectName());
    node->targets.push_back(first);
    if (IsOp(".")) {
      Next();
      ASSIGN_OR_RETURN(node->attr, ExpectName());
    } else {
      while (IsOp(",")) {
        Next();
        ASSIGN_OR_RETURN(std::string n, ExpectName());
        node->targets.push_back(std::move(n));
      }
    }
    if (IsOp("=")) {
      Next();
      ASSIGN_OR_RETURN(node->value, ParseTupleOrExpression());
      RETURN_IF_ERROR(ExpectBlockEnd());
      return NodePtr(std::move(node));
    }
    if (Peek().type != Tok::kBlockEnd || node->targets.size() != 1) {
      return Unexpected("expected '='");
    }
    Next();
    std::string end;
    RETURN_IF_ERROR(ParseBody({"endset"}, &node->body, &end));
    RETURN_IF_ERROR(ExpectBlockEnd());
    return NodePtr(std::move(node));
  }

  absl::StatusOr<NodePtr> ParseMacro(int line) {
    auto node = std::make_unique<MacroNode>(line);
    ASSIGN_OR_RETURN(node->name, ExpectName());
    RETURN_IF_ERROR(Expect("("));
    while (!IsOp(")")) {
      ASSIGN_OR_RETURN(std::string param, ExpectName());
      ExprPtr def;
      if (IsOp("=")) {
        Next();
        ASSIGN_OR_RETURN(def, ParseExpression());
      }
      node->params.emplace_back(std::move(param), std::move(def));
      if (!IsOp(",")) break;
      Next();
    }
    RETURN_IF_ERROR(Expect(")"));
    RETURN_IF_ERROR(ExpectBlockEnd());
    std::string end;
    const int saved_loop_depth = loop_depth_;
    loop_depth_ = 0;
    absl::Status st = ParseBody({"endmacro"}, &node->body, &end);
    loop_depth_ = saved_loop_depth;
    RETURN_IF_ERROR(st);
    RETURN_IF_ERROR(ExpectBlockEnd());
    return NodePtr(std::move(node));
  }

  // ----- expressions

  // `a, b` at statement level (set x = 1, 2) makes a tuple (a list here).
  absl::StatusOr<ExprPtr> ParseTupleOrExpression() {
    const int line = Peek().line;
    ASSIGN_OR_RETURN(ExprPtr first, ParseExpression());
    if (!IsOp(",")) return first;
    std::vector<ExprPtr> items;
    items.push_back(std::move(first));
    while (IsOp(",")) {
      Next();
      if (Peek().type == Tok::kBlockEnd) break;
      ASSIGN_OR_RETURN(ExprPtr e, ParseExpression());
      items.push_back(std::move(e));
    }
    return ExprPtr(std::make_unique<ListExpr>(line, std::move(items)));
  }

  absl::StatusOr<ExprPtr> ParseExpression(bool allow_conditional = true) {
    DepthGuard guard(&depth_);
    RETURN_IF_ERROR(CheckDepth());
    const int line = Peek().line;
    ASSIGN_OR_RETURN(ExprPtr e, ParseOr());
    if (allow_conditional && IsName("if")) {
      Next();
      ASSIGN_OR_RETURN(ExprPtr cond, ParseOr());
      ExprPtr otherwise;
      if (IsName("else")) {
        Next();
        ASSIGN_OR_RETURN(otherwise, ParseExpression());
      }
      return ExprPtr(
          std::make_unique<CondExpr>(line, std::move(e), std::move(cond), std::move(otherwise)));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseOr() {
    ASSIGN_OR_RETURN(ExprPtr e, ParseAnd());
    while (IsName("or")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr r, ParseAnd());
      e = std::make_unique<AndOrExpr>(line, false, std::move(e), std::move(r));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseAnd() {
    ASSIGN_OR_RETURN(ExprPtr e, ParseNot());
    while (IsName("and")) {
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr r, ParseNot());
      e = std::make_unique<AndOrExpr>(line, true, std::move(e), std::move(r));
    }
    return e;
  }

  absl::StatusOr<ExprPtr> ParseNot() {
    if (IsName("not")) {
      const int line = Next().line;
      DepthGuard guard(&depth_);
      RETURN_IF_ERROR(CheckDepth());
      ASSIGN_OR_RETURN(ExprPtr e, ParseNot());
      return ExprPtr(std::make_unique<NotExpr>(line, std::move(e)));
    }
    return ParseCompare();
  }

  absl::StatusOr<ExprPtr> ParseCompare() {
    const int line = Peek().line;
    ASSIGN_OR_RETURN(ExprPtr e, ParseMath1());
    std::vector<std::pair<std::string, ExprPtr>> rest;
    while (true) {
      std::string op;
      if (Peek().type == Tok::kOp &&
          (Peek().text == "==" || Peek().text == "!=" || Peek().text == "<" || Peek().text == ">" ||
           Peek().text == "<=" || Peek().text == ">=")) {
        op = Next().text;
      } else if (IsName("in")) {
        Next();
        op = "in";
      } else if (IsName("not") && IsName("in", 1)) {
        Next();
        Next();
        op = "notin";
      } else {
        break;
      }
      ASSIGN_OR_RETURN(ExprPtr r, ParseMath1());
      rest.emplace_back(op, std::move(r));
    }
    if (rest.empty()) return e;
    return ExprPtr(std::make_unique<CompareExpr>(line, std::move(e), std::move(rest)));
  }

  absl::StatusOr<ExprPtr> ParseBinaryLevel(const std::vector<const char*>& ops,
                                           absl::StatusOr<ExprPtr> (Parser::*next)()) {
    ASSIGN_OR_RETURN(ExprPtr e, (this->*next)());
    while (true) {
      const char* matched = nullptr;
      for (const char* op : ops) {
        if (IsOp(op)) matched = op;
      }
      if (matched == nullptr) return e;
      const int line = Next().line;
      ASSIGN_OR_RETURN(ExprPtr r, (this->*next)());
      e = std::make_unique<BinaryExpr>(line, matched, std::move(e), std::move(r));
    }
  }
  absl::StatusOr<ExprPtr> ParseMath1() {
    return ParseBinaryLevel({"+", "-"}, &Parser::ParseConcat);
  }
  absl::StatusOr<ExprPtr> ParseConcat() { return ParseBinaryLevel({"~"}, &Parser::ParseMath2); }
  absl::StatusOr<ExprPtr> ParseMath2() {
    return ParseBinaryLevel({"*", "/", "//", "%"}, &Parser::ParsePow);
  }
  absl::StatusOr<ExprPtr> ParsePow() {
    return ParseBinaryLevel({"**"}, &Parser::ParseUnaryFiltered);
  }
  absl::StatusOr<ExprPtr> ParseUnaryFiltered() { return ParseUnary(true); }

  absl::StatusOr<ExprPtr> ParseUnary(bool with_filter) {
    DepthGuard guard(&depth_);
    RETURN_IF_ERROR(CheckDepth());
    ExprPtr e;
    if (IsOp("-") || IsOp("+")) {
      const Token& t = Next();
      const char op = t.text[0];
      ASSIGN_OR_RETURN(ExprPtr x, ParseUnary(false));
      e = std::make_unique<UnaryExpr>(t.line, op, std::move(x));
    } else {
      ASSIGN_OR_RETURN(e, ParsePrimary());
      ASSIGN_OR_RETURN(e, ParsePostfix(std::move(e)));
    }
    if (with_filter) return ParseFilterAndTest(std::move(e));
    return e;
  }

  absl::StatusOr<std::vector<Arg>> ParseCallArgs() {
    // At '(' already consumed.
    std::vector<Arg> args;
    while (!IsOp(")")) {
      Arg a;
      if (Peek().type == Tok::kName && IsOp("=", 1)) {
        a.name = Next().text;
        Next();
      }
      ASSIGN_OR_RETURN(a.value, ParseExpression());
      args.push_back(std::move(a));
      if (!IsOp(",")) break;
      Next();
    }
    RETURN_IF_ERROR(Expect(")"));
    return args;
  }

  absl::StatusOr<ExprPtr> ParsePostfix(ExprPtr e) {
    while (true) {
      const int line = Peek().line;
      if (IsOp(".")) {
        Next();
        if (Peek().type == Tok::kInt) {
          e = std::make_unique<IndexExpr>(
              line, std::move(e),
              std::make_unique<LiteralExpr>(line, Value::Int(Next().int_value)));
          continue;
        }
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        e = std::make_unique<AttrExpr>(line, std::move(e), std::move(name));
      } else if (IsOp("[")) {
        Next();
        ExprPtr parts[3];
        int colons = 0;
        while (true) {
          if (IsOp(":")) {
            if (++colons > 2) return Unexpected("expected ']'");
            Next();
            continue;
          }
          if (IsOp("]")) break;
          if (parts[colons] != nullptr) return Unexpected("expected ']'");
          ASSIGN_OR_RETURN(parts[colons], ParseExpression());
        }
        Next();
        if (colons == 0) {
          if (parts[0] == nullptr) return SyntaxError(line, "empty subscript");
          e = std::make_unique<IndexExpr>(line, std::move(e), std::move(parts[0]));
        } else {
          e = std::make_unique<SliceExpr>(line, std::move(e), std::move(parts[0]),
                                          std::move(parts[1]), std::move(parts[2]));
        }
      } else if (IsOp("(")) {
        Next();
        ASSIGN_OR_RETURN(std::vector<Arg> args, ParseCallArgs());
        e = std::make_unique<CallExpr>(line, std::move(e), std::move(args));
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParseFilterAndTest(ExprPtr e) {
    while (true) {
      const int line = Peek().line;
      if (IsOp("|")) {
        Next();
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        std::vector<Arg> args;
        if (IsOp("(")) {
          Next();
          ASSIGN_OR_RETURN(args, ParseCallArgs());
        }
        e = std::make_unique<FilterExpr>(line, std::move(e), std::move(name), std::move(args));
      } else if (IsName("is")) {
        Next();
        bool negated = false;
        if (IsName("not")) {
          Next();
          negated = true;
        }
        ASSIGN_OR_RETURN(std::string name, ExpectName());
        std::vector<Arg> args;
        if (IsOp("(")) {
          Next();
          ASSIGN_OR_RETURN(args, ParseCallArgs());
        } else if (Peek().type == Tok::kString || Peek().type == Tok::kInt ||
                   Peek().type == Tok::kFloat ||
                   (Peek().type == Tok::kName && !IsName("and") && !IsName("or") && !IsName("if") &&
                    !IsName("else") && !IsName("is") && !IsName("in") && !IsName("not"))) {
          // One argument without parentheses: `x is divisibleby 3`, `x is sameas none`.
          Arg a;
          ASSIGN_OR_RETURN(a.value, ParsePrimary());
          ASSIGN_OR_RETURN(a.value, ParsePostfix(std::move(a.value)));
          args.push_back(std::move(a));
        }
        if (!HasTest(name)) return SyntaxError(line, absl::StrCat("unknown test '", name, "'"));
        e = std::make_unique<TestExpr>(line, std::move(e), std::move(name), std::move(args),
                                       negated);
      } else {
        return e;
      }
    }
  }

  absl::StatusOr<ExprPtr> ParsePrimary() {
    DepthGuard guard(&depth_);
    RETURN_IF_ERROR(CheckDepth());
    const Token& t = Peek();
    const int line = t.line;
    switch (t.type) {
      case Tok::kString: {
        std::string s = Next().text;
        // Adjacent string literals concatenate, as in Python.
        while (Peek().type == Tok::kString) s += Next().text;
        return ExprPtr(std::make_unique<LiteralExpr>(line, Value::String(std::move(s))));
      }
      case Tok::kInt:
        return ExprPtr(std::make_unique<LiteralExpr>(line, Value::Int(Next().int_value)));
      case Tok::kFloat:
        return ExprPtr(std::make_unique<LiteralExpr>(line, Value::Float(Next().float_value)));
      case Tok::kName: {
        const std::string name = Next().text;
        if (name == "true" || name == "True") {
          return ExprPtr(std::make_unique<LiteralExpr>(line, Value::Bool(true)));
        }
        if (name == "false" || name == "False") {
          return ExprPtr(std::make_unique<LiteralExpr>(line, Value::Bool(false)));
        }
        if (name == "none" || name == "None") {
          return ExprPtr(std::make_unique<LiteralExpr>(line, Value::None()));
        }
        return ExprPtr(std::make_unique<NameExpr>(line, name));
      }
      case Tok::kOp:
        if (t.text == "(") {
          Next();
          if (IsOp(")")) {
            Next();
            return ExprPtr(std::make_unique<ListExpr>(line, std::vector<ExprPtr>()));
          }
          ASSIGN_OR_RETURN(ExprPtr e, ParseExpression());
          if (IsOp(",")) {
            std::vector<ExprPtr> items;
            items.push_back(std::move(e));
            while (IsOp(",")) {
              Next();
              if (IsOp(")")) break;
              ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
              items.push_back(std::move(item));
            }
            e = std::make_unique<ListExpr>(line, std::move(items));
          }
          RETURN_IF_ERROR(Expect(")"));
          return e;
        }
        if (t.text == "[") {
          Next();
          std::vector<ExprPtr> items;
          while (!IsOp("]")) {
            ASSIGN_OR_RETURN(ExprPtr item, ParseExpression());
            items.push_back(std::move(item));
            if (!IsOp(",")) break;
            Next();
          }
          RETURN_IF_ERROR(Expect("]"));
          return ExprPtr(std::make_unique<ListExpr>(line, std::move(items)));
        }
        if (t.text == "{") {
          Next();
          std::vector<std::pair<ExprPtr, ExprPtr>> items;
          while (!IsOp("}")) {
            ASSIGN_OR_RETURN(ExprPtr key, ParseExpression());
            RETURN_IF_ERROR(Expect(":"));
            ASSIGN_OR_RETURN(ExprPtr value, ParseExpression());
            items.emplace_back(std::move(key), std::move(value));
            if (!IsOp(",")) break;
            Next();
          }
          RETURN_IF_ERROR(Expect("}"));
          return ExprPtr(std::make_unique<DictExpr>(line, std::move(items)));
        }
        break;
      default:
        break;
    }
    return Unexpected("expected an expression");
  }

  std::vector<Token> tokens_;
  const Limits& limits_;
  size_t pos_ = 0;
  int depth_ = 0;
  int loop_depth_ = 0;
};

}  // namespace

absl::StatusOr<std::unique_ptr<SequenceNode>> ParseTokens(std::vector<Token> tokens,
                                                          const Limits& limits) {
  Parser parser(std::move(tokens), limits);
  return parser.ParseTemplate();
}

}  // namespace qwen::chat::jinja
