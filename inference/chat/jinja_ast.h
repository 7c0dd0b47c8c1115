// The syntax tree of a parsed template: expressions (Expr, evaluated to a Value) and statements
// (Node, executed into the output), built by the parser (jinja_parser.cc) and evaluated by their
// Eval and Exec (jinja_eval.cc). Internal to the interpreter. Immutable once parsed: one tree
// serves concurrent renders, each with its own Interpreter.
#ifndef QWEN_INFERENCE_CHAT_JINJA_AST_H_
#define QWEN_INFERENCE_CHAT_JINJA_AST_H_

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "inference/chat/jinja_internal.h"
#include "inference/chat/jinja_value.h"

namespace qwen::chat::jinja {

// Expressions.

class Expr {
 public:
  explicit Expr(int line) : line(line) {}
  virtual ~Expr() = default;
  virtual absl::StatusOr<Value> Eval(Interpreter& in) const = 0;
  const int line;
};

using ExprPtr = std::unique_ptr<Expr>;

class Node {
 public:
  explicit Node(int line) : line(line) {}
  virtual ~Node() = default;
  virtual absl::Status Exec(Interpreter& in, std::string* out) const = 0;
  const int line;
};

using NodePtr = std::unique_ptr<Node>;

struct Arg {
  std::string name;  // empty for positional
  ExprPtr value;
};

class LiteralExpr : public Expr {
 public:
  LiteralExpr(int line, Value v) : Expr(line), value_(std::move(v)) {}
  absl::StatusOr<Value> Eval(Interpreter&) const override;

 private:
  Value value_;
};

class NameExpr : public Expr {
 public:
  NameExpr(int line, std::string name) : Expr(line), name(std::move(name)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;
  const std::string name;
};

class ListExpr : public Expr {
 public:
  ListExpr(int line, std::vector<ExprPtr> items) : Expr(line), items_(std::move(items)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  std::vector<ExprPtr> items_;
};

class DictExpr : public Expr {
 public:
  DictExpr(int line, std::vector<std::pair<ExprPtr, ExprPtr>> items)
      : Expr(line), items_(std::move(items)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  std::vector<std::pair<ExprPtr, ExprPtr>> items_;
};

class AttrExpr : public Expr {
 public:
  AttrExpr(int line, ExprPtr obj, std::string name)
      : Expr(line), obj(std::move(obj)), name(std::move(name)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;
  ExprPtr obj;
  const std::string name;
};

class IndexExpr : public Expr {
 public:
  IndexExpr(int line, ExprPtr obj, ExprPtr index)
      : Expr(line), obj_(std::move(obj)), index_(std::move(index)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  ExprPtr obj_, index_;
};

class SliceExpr : public Expr {
 public:
  SliceExpr(int line, ExprPtr obj, ExprPtr start, ExprPtr stop, ExprPtr step)
      : Expr(line),
        obj_(std::move(obj)),
        start_(std::move(start)),
        stop_(std::move(stop)),
        step_(std::move(step)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  ExprPtr obj_, start_, stop_, step_;
};

class CallExpr : public Expr {
 public:
  CallExpr(int line, ExprPtr callee, std::vector<Arg> args)
      : Expr(line), callee_(std::move(callee)), args_(std::move(args)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  absl::StatusOr<Value> Invoke(Interpreter& in, const Value& fn, const CallArgs& args,
                               const std::string& what) const;

  ExprPtr callee_;
  std::vector<Arg> args_;
};

class FilterExpr : public Expr {
 public:
  FilterExpr(int line, ExprPtr input, std::string name, std::vector<Arg> args)
      : Expr(line), input_(std::move(input)), name_(std::move(name)), args_(std::move(args)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  ExprPtr input_;
  std::string name_;
  std::vector<Arg> args_;
};

class TestExpr : public Expr {
 public:
  TestExpr(int line, ExprPtr input, std::string name, std::vector<Arg> args, bool negated)
      : Expr(line),
        input_(std::move(input)),
        name_(std::move(name)),
        args_(std::move(args)),
        negated_(negated) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  ExprPtr input_;
  std::string name_;
  std::vector<Arg> args_;
  bool negated_;
};

class NotExpr : public Expr {
 public:
  NotExpr(int line, ExprPtr x) : Expr(line), x_(std::move(x)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  ExprPtr x_;
};

class AndOrExpr : public Expr {
 public:
  AndOrExpr(int line, bool is_and, ExprPtr a, ExprPtr b)
      : Expr(line), is_and_(is_and), a_(std::move(a)), b_(std::move(b)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  bool is_and_;
  ExprPtr a_, b_;
};

class CondExpr : public Expr {
 public:
  CondExpr(int line, ExprPtr then, ExprPtr cond, ExprPtr otherwise)
      : Expr(line),
        then_(std::move(then)),
        cond_(std::move(cond)),
        otherwise_(std::move(otherwise)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  ExprPtr then_, cond_, otherwise_;
};

class UnaryExpr : public Expr {
 public:
  UnaryExpr(int line, char op, ExprPtr x) : Expr(line), op_(op), x_(std::move(x)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  char op_;
  ExprPtr x_;
};

class BinaryExpr : public Expr {
 public:
  BinaryExpr(int line, std::string op, ExprPtr a, ExprPtr b)
      : Expr(line), op_(std::move(op)), a_(std::move(a)), b_(std::move(b)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  std::string op_;
  ExprPtr a_, b_;
};

class CompareExpr : public Expr {
 public:
  CompareExpr(int line, ExprPtr first, std::vector<std::pair<std::string, ExprPtr>> rest)
      : Expr(line), first_(std::move(first)), rest_(std::move(rest)) {}
  absl::StatusOr<Value> Eval(Interpreter& in) const override;

 private:
  ExprPtr first_;
  std::vector<std::pair<std::string, ExprPtr>> rest_;
};

class TextNode : public Node {
 public:
  TextNode(int line, std::string text) : Node(line), text_(std::move(text)) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override;

 private:
  std::string text_;
};

class OutputNode : public Node {
 public:
  OutputNode(int line, ExprPtr e) : Node(line), e_(std::move(e)) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override;

 private:
  ExprPtr e_;
};

class IfNode : public Node {
 public:
  explicit IfNode(int line) : Node(line) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override;
  std::vector<std::pair<ExprPtr, std::vector<NodePtr>>> branches;  // null cond: else
};

class ForNode : public Node {
 public:
  explicit ForNode(int line) : Node(line) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override;
  std::vector<std::string> targets;
  ExprPtr iter;
  ExprPtr filter;
  std::vector<NodePtr> body;
  std::vector<NodePtr> else_body;
};

class FlowNode : public Node {
 public:
  FlowNode(int line, Flow flow) : Node(line), flow_(flow) {}
  absl::Status Exec(Interpreter& in, std::string*) const override;

 private:
  Flow flow_;
};

class SetNode : public Node {
 public:
  explicit SetNode(int line) : Node(line) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override;
  std::vector<std::string> targets;
  std::string attr;  // set ns.attr = ...
  ExprPtr value;     // null: block set
  std::vector<NodePtr> body;
};

class MacroNode : public Node {
 public:
  explicit MacroNode(int line) : Node(line) {}
  absl::Status Exec(Interpreter& in, std::string*) const override;

  absl::StatusOr<Value> Call(Interpreter& in, const CallArgs& args) const;

  std::string name;
  std::vector<std::pair<std::string, ExprPtr>> params;  // default may be null
  std::vector<NodePtr> body;
};

class SequenceNode : public Node {
 public:
  explicit SequenceNode(int line) : Node(line) {}
  absl::Status Exec(Interpreter& in, std::string* out) const override;
  std::vector<NodePtr> body;
};

}  // namespace qwen::chat::jinja

#endif  // QWEN_INFERENCE_CHAT_JINJA_AST_H_
