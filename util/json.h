// A minimal streaming JSON writer: objects, arrays, strings (escaped), numbers.
//
// Strings are escaped per RFC 8259, so text that came off the network can be
// written as it is. The caller keeps keys and values in order; no validation.
#pragma once

#include <cstdint>
#include <cstdio>
#include <type_traits>
#include <string>
#include <string_view>
#include <vector>

namespace wanopt::json {

class Writer {
 public:
  void BeginObject() { Open('{'); }
  void EndObject() { Close('}'); }
  void BeginArray() { Open('['); }
  void EndArray() { Close(']'); }
  void Key(std::string_view key) {
    Separate();
    String(key);
    out_ += ':';
    after_key_ = true;
  }
  void Value(std::string_view v) { Separate(); String(v); }
  void Value(const char* v) { Value(std::string_view(v)); }
  void Value(const std::string& v) { Value(std::string_view(v)); }
  void Value(bool v) { Separate(); out_ += v ? "true" : "false"; }
  void Value(double v);
  template <class Int>
    requires std::is_integral_v<Int>
  void Value(Int v) {
    Separate();
    out_ += std::to_string(v);
  }
  void Null() { Separate(); out_ += "null"; }
  template <class T>
  void Field(std::string_view key, const T& value) {
    Key(key);
    Value(value);
  }
  const std::string& str() const { return out_; }

 private:
  void Open(char c) {
    Separate();
    out_ += c;
    first_.push_back(true);
  }
  void Close(char c) {
    out_ += c;
    first_.pop_back();
  }
  void Separate() {
    if (after_key_) {
      after_key_ = false;
      return;
    }
    if (!first_.empty()) {
      if (!first_.back()) out_ += ',';
      first_.back() = false;
    }
  }
  void String(std::string_view s);

  std::string out_;
  std::vector<bool> first_;
  bool after_key_ = false;
};

inline void Writer::Value(double v) {
  Separate();
  char text[32];
  std::snprintf(text, sizeof text, "%.6g", v);
  out_ += text;
}

inline void Writer::String(std::string_view s) {
  out_ += '"';
  for (unsigned char c : s) {
    switch (c) {
      case '"': out_ += "\\\""; break;
      case '\\': out_ += "\\\\"; break;
      case '\n': out_ += "\\n"; break;
      case '\r': out_ += "\\r"; break;
      case '\t': out_ += "\\t"; break;
      default:
        if (c < 0x20 || c == '<' || c == '>' || c == '&') {
          // <, > and & too: JSON embedded in a page can never close a script tag.
          char esc[8];
          std::snprintf(esc, sizeof esc, "\\u%04x", c);
          out_ += esc;
        } else {
          out_ += static_cast<char>(c);
        }
    }
  }
  out_ += '"';
}

}  // namespace wanopt::json
